fn main() {
    // Re-embed the migrations whenever one is added or changed.
    println!("cargo:rerun-if-changed=../migrations");
}

//! The Docker stack (deploy/docker-compose.yml, deploy/Dockerfile, redpanda.yml, the topic init
//! script), checked without a Docker engine: the compose file parses, each service's
//! environment passes that binary's own `--check-config`, and ports, topics and credentials
//! agree with the other configs, the local stack and the constants table
//! (`vigil_ops_tests::constants`).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use regex::Regex;
use serde_yaml::Value;
use vigil_ops_tests::constants::*;
use vigil_ops_tests::{compose, repo, tools};

const VIGIL_SERVICES: [&str; 4] = ["producer", "detector", "sink", "webhook"];

#[test]
fn the_compose_file_defines_the_whole_stack_with_health_checks_and_start_order() {
    let c = compose::load_defaults();
    let names: BTreeSet<String> =
        c["services"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_owned()).collect();
    let expected: BTreeSet<String> = [
        "redpanda",
        "redpanda-init",
        "postgres",
        "producer",
        "detector",
        "sink",
        "webhook",
        "prometheus",
        "alertmanager",
        "grafana",
        "simulator",
        "alert-receiver",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(names, expected);
    let volumes: BTreeSet<&str> = c["volumes"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
    for name in &names {
        let svc = compose::service(&c, name);
        // Every named volume a service mounts is declared.
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let source = v.as_str().unwrap().split(':').next().unwrap();
            if !source.starts_with('.') && !source.starts_with('/') {
                assert!(volumes.contains(source), "{name}: volume {source} is not declared");
            } else {
                let host = repo::path("deploy").join(source);
                assert!(host.exists(), "{name} mounts {source}, which does not exist ({})", host.display());
            }
        }
        // Every dependency exists; waiting for health needs a health check.
        for (dep, cond) in svc["depends_on"].as_mapping().into_iter().flatten() {
            let dep = dep.as_str().unwrap();
            assert!(names.contains(dep), "{name} depends on unknown {dep}");
            match cond["condition"].as_str() {
                Some("service_healthy") => {
                    assert!(
                        compose::service(&c, dep)["healthcheck"]["test"].is_sequence(),
                        "{name} waits for {dep}'s health, which has no check"
                    )
                }
                Some("service_completed_successfully") => assert_eq!(dep, "redpanda-init"),
                other => panic!("{name} -> {dep}: use a condition, not {other:?}"),
            }
        }
        // A one-shot init step and a traffic generator serve nothing to check.
        if name != "redpanda-init" && name != "simulator" {
            assert!(svc["healthcheck"]["test"].is_sequence(), "{name} has no health check");
        }
    }
    for name in VIGIL_SERVICES {
        let svc = compose::service(&c, name);
        assert_eq!(repo::ystr(svc, &["build", "context"]), "..", "{name}");
        assert_eq!(repo::ystr(svc, &["build", "dockerfile"]), "deploy/Dockerfile", "{name}");
        assert_eq!(svc["command"][0].as_str(), Some(name), "{name}: the image runs the binary named by command");
        assert_eq!(
            svc["depends_on"]["redpanda-init"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{name} must wait for the topics"
        );
        if ["producer", "sink", "webhook"].contains(&name) {
            assert_eq!(svc["depends_on"]["postgres"]["condition"].as_str(), Some("service_healthy"), "{name}");
        }
        let port = service(name).port;
        let check = svc["healthcheck"]["test"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            check.contains(&format!("/dev/tcp/127.0.0.1/{port}")) && check.contains("GET /health"),
            "{name}: {check}"
        );
    }
}

/// The binary's own validation, with exactly `env` as its environment.
fn check_config(bin: &str, env: &BTreeMap<String, String>) -> (bool, String) {
    let out = tools::run(Command::new(tools::service_binary(bin)).env_clear().envs(env).arg("--check-config"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn every_service_environment_in_compose_passes_that_binarys_check_config() {
    let c = compose::load_defaults();
    for name in VIGIL_SERVICES {
        let env = compose::environment(&c, name);
        let (ok, out) = check_config(name, &env);
        assert!(ok && out.contains("configuration is valid"), "{name} refuses its compose environment {env:?}:\n{out}");
    }
    // The same check refuses a broken environment, so the passes above mean something.
    let mut env = compose::environment(&c, "webhook");
    env.insert("WEBHOOK_TOKEN".into(), "short".into());
    let (ok, out) = check_config("webhook", &env);
    assert!(!ok && out.contains("WEBHOOK_TOKEN"), "{out}");
    let mut env = compose::environment(&c, "sink");
    env.remove("DATABASE_URL");
    assert!(!check_config("sink", &env).0);
}

#[test]
fn a_token_set_in_the_environment_reaches_the_webhook_service_grafana_and_alertmanager() {
    let custom = "a-token-chosen-by-the-operator-1234";
    let env: BTreeMap<String, String> = [("WEBHOOK_TOKEN".to_owned(), custom.to_owned())].into();
    let c = compose::load(&env);
    for name in ["webhook", "grafana", "alertmanager"] {
        assert_eq!(compose::environment(&c, name)["WEBHOOK_TOKEN"], custom, "{name}");
    }
    let defaults = compose::load_defaults();
    for name in ["webhook", "grafana", "alertmanager"] {
        assert_eq!(compose::environment(&defaults, name)["WEBHOOK_TOKEN"], WEBHOOK_DEFAULT_TOKEN, "{name}");
    }
}

/// `[env: VAR=...] [default: X]` pairs of a binary's `--help` (an empty default as "").
fn help_defaults(bin: &str) -> BTreeMap<String, String> {
    let out = tools::run_ok(Command::new(tools::service_binary(bin)).env_clear().arg("--help"));
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    let re = Regex::new(r"\[env: ([A-Z0-9_]+)=?[^\]]*\] \[default: ([^\]]*)\]").unwrap();
    re.captures_iter(&flat)
        .map(|c| (c[1].to_owned(), if &c[2] == "\"\"" { String::new() } else { c[2].to_owned() }))
        .collect()
}

#[test]
fn the_services_own_defaults_agree_with_the_ports_and_topics_of_the_stack() {
    for s in SERVICES {
        let defaults = help_defaults(s.name);
        assert_eq!(defaults.get(s.bind_var), Some(&format!("0.0.0.0:{}", s.port)), "{}: {defaults:?}", s.name);
        for (var, topic) in TOPIC_VARS {
            if let Some(d) = defaults.get(var) {
                assert_eq!(d, topic, "{}: default of {var}", s.name);
            }
        }
    }
    // Every topic variable is some service's.
    let all: BTreeSet<String> = SERVICES.iter().flat_map(|s| help_defaults(s.name).into_keys()).collect();
    for (var, _) in TOPIC_VARS {
        assert!(all.contains(var), "no service reads {var}");
    }
}

#[test]
fn ports_brokers_and_topics_in_compose_agree_with_redpanda_yml_and_the_constants() {
    let c = compose::load_defaults();
    // Published ports: the seed experience (ingest, webhook, Grafana) on every interface,
    // the rest on loopback only.
    for s in SERVICES {
        let ports = compose::ports(&c, s.name);
        if s.published {
            assert_eq!(ports, vec![("0.0.0.0".to_owned(), s.port, s.port)], "{}", s.name);
        } else {
            assert!(ports.is_empty(), "{} is internal", s.name);
        }
    }
    assert_eq!(compose::ports(&c, "grafana"), vec![("0.0.0.0".to_owned(), GRAFANA_PORT, GRAFANA_PORT)]);
    assert_eq!(compose::ports(&c, "prometheus"), vec![("127.0.0.1".to_owned(), PROMETHEUS_PORT, PROMETHEUS_PORT)]);
    assert_eq!(
        compose::ports(&c, "alertmanager"),
        vec![("127.0.0.1".to_owned(), ALERTMANAGER_PORT, ALERTMANAGER_PORT)]
    );
    assert_eq!(
        compose::ports(&c, "redpanda"),
        vec![("127.0.0.1".to_owned(), KAFKA_EXTERNAL_PORT, KAFKA_EXTERNAL_PORT)]
    );

    for name in VIGIL_SERVICES {
        let env = compose::environment(&c, name);
        assert_eq!(env["KAFKA_BROKERS"], KAFKA_BROKERS, "{name}");
        assert_eq!(env["SCHEMA_REGISTRY_URL"], SCHEMA_REGISTRY_URL, "{name}");
        for (var, topic) in TOPIC_VARS {
            if let Some(v) = env.get(var) {
                assert_eq!(v, topic, "{name}: {var}");
            }
        }
    }
    let detector = compose::environment(&c, "detector");
    for (var, _) in TOPIC_VARS {
        assert!(detector.contains_key(var), "the detector's {var} is spelled out in compose");
    }

    // redpanda.yml: the listeners the services and the host use.
    let rp = repo::yaml("redpanda.yml");
    let listener = |key: &str, name: &str| -> (String, u16) {
        let l = rp["redpanda"][key]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|l| l["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no {key} {name}"));
        (l["address"].as_str().unwrap().to_owned(), l["port"].as_u64().unwrap() as u16)
    };
    let (host, port) = KAFKA_BROKERS.split_once(':').unwrap();
    assert_eq!(listener("kafka_api", "internal").1, port.parse::<u16>().unwrap());
    assert_eq!(listener("advertised_kafka_api", "internal"), (host.to_owned(), port.parse().unwrap()));
    assert!(c["services"].get(host).is_some(), "advertised host {host} is the compose service");
    assert_eq!(listener("kafka_api", "external").1, KAFKA_EXTERNAL_PORT);
    assert_eq!(listener("advertised_kafka_api", "external"), ("127.0.0.1".to_owned(), KAFKA_EXTERNAL_PORT));
    assert_eq!(listener("admin", "admin").1, REDPANDA_ADMIN_PORT);
    let sr = &rp["schema_registry"]["schema_registry_api"][0];
    assert_eq!(format!("http://{host}:{}", sr["port"].as_u64().unwrap()), SCHEMA_REGISTRY_URL);
    assert_eq!(rp["redpanda"]["data_directory"].as_str(), Some("/var/lib/redpanda/data"));
    let redpanda = compose::service(&c, "redpanda");
    let mounts: Vec<&str> = redpanda["volumes"].as_sequence().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(mounts.contains(&"../redpanda.yml:/etc/vigil/redpanda.yml:ro"), "{mounts:?}");
    assert!(mounts.contains(&"redpanda-data:/var/lib/redpanda/data"), "{mounts:?}");
    assert!(redpanda["command"][0]
        .as_str()
        .unwrap()
        .contains("cp /etc/vigil/redpanda.yml /etc/redpanda/redpanda.yaml"));
    let init = compose::environment(&c, "redpanda-init");
    assert_eq!(init["KAFKA_BROKERS"], KAFKA_BROKERS);
    assert_eq!(init["REDPANDA_ADMIN"], format!("{host}:{REDPANDA_ADMIN_PORT}"));
}

#[test]
fn redpanda_yml_documents_every_setting() {
    let text = repo::read("redpanda.yml");
    let lines: Vec<&str> = text.lines().collect();
    let key = Regex::new(r"^\s*[a-z_]+:").unwrap();
    // Every section and every setting under it has its own comment (a listener's fields are
    // explained by the comment above the list).
    for (i, line) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start().len();
        if key.is_match(line) && indent <= 2 && !line.trim_start().starts_with('-') {
            let above = lines[..i].iter().rev().find(|l| !l.trim().is_empty()).copied().unwrap_or("");
            assert!(
                above.trim_start().starts_with('#'),
                "redpanda.yml line {}: {line:?} has no comment above it",
                i + 1
            );
        }
    }
}

#[test]
fn postgres_grafana_and_webhook_credentials_agree() {
    let c = compose::load_defaults();
    let pg = compose::environment(&c, "postgres");
    assert_eq!(pg["POSTGRES_USER"], POSTGRES_USER);
    assert_eq!(pg["POSTGRES_PASSWORD"], POSTGRES_DEFAULT_PASSWORD);
    assert_eq!(pg["POSTGRES_DB"], POSTGRES_DB);
    let url = format!("postgres://{POSTGRES_USER}:{POSTGRES_DEFAULT_PASSWORD}@{POSTGRES_HOST_PORT}/{POSTGRES_DB}");
    for name in ["sink", "webhook"] {
        assert_eq!(compose::environment(&c, name)["DATABASE_URL"], url, "{name}");
    }
    let check = compose::service(&c, "postgres")["healthcheck"]["test"][1].as_str().unwrap();
    assert!(check.contains(&format!("-U {POSTGRES_USER} -d {POSTGRES_DB}")), "{check}");

    // Grafana: admin/admin, and its database login is the read-only role the init script makes.
    let g = compose::environment(&c, "grafana");
    assert_eq!(g["GF_SECURITY_ADMIN_USER"], GRAFANA_ADMIN_USER);
    assert_eq!(g["GF_SECURITY_ADMIN_PASSWORD"], GRAFANA_ADMIN_PASSWORD);
    assert_eq!(g["GRAFANA_DB_PASSWORD"], GRAFANA_DB_DEFAULT_PASSWORD);
    assert_eq!(pg["GRAFANA_DB_PASSWORD"], g["GRAFANA_DB_PASSWORD"]);
    let ds = repo::yaml("grafana/provisioning/datasources/vigil.yaml");
    let list = ds["datasources"].as_sequence().unwrap();
    let by_uid = |uid: &str| list.iter().find(|d| d["uid"].as_str() == Some(uid)).unwrap_or_else(|| panic!("no {uid}"));
    let pgds = by_uid(PG_DATASOURCE_UID);
    assert_eq!(repo::ystr(pgds, &["type"]), "grafana-postgresql-datasource");
    assert_eq!(repo::ystr(pgds, &["url"]), POSTGRES_HOST_PORT);
    assert_eq!(repo::ystr(pgds, &["user"]), GRAFANA_DB_USER);
    assert_eq!(repo::ystr(pgds, &["jsonData", "database"]), POSTGRES_DB);
    assert_eq!(repo::ystr(pgds, &["secureJsonData", "password"]), "$__env{GRAFANA_DB_PASSWORD}");
    let init = repo::read("deploy/postgres/initdb/10-grafana-reader.sh");
    assert!(init.contains(&format!("CREATE ROLE {GRAFANA_DB_USER} LOGIN PASSWORD :'password'")), "{init}");
    assert!(init.contains("password=\"${GRAFANA_DB_PASSWORD:-grafana}\""), "{init}");
    assert!(init.contains("GRANT SELECT ON TABLES TO grafana_reader") && !init.contains("INSERT"), "{init}");
    let prom = by_uid(PROM_DATASOURCE_UID);
    assert_eq!(repo::ystr(prom, &["type"]), "prometheus");
    assert_eq!(repo::ystr(prom, &["url"]), format!("http://prometheus:{PROMETHEUS_PORT}"));

    // One webhook token: accepted by the service, sent by Grafana and Alertmanager.
    assert!(WEBHOOK_DEFAULT_TOKEN.len() >= 16, "the webhook service refuses tokens under 16 characters");
    assert_eq!(compose::environment(&c, "webhook")["WEBHOOK_TOKEN"], WEBHOOK_DEFAULT_TOKEN);
    assert_eq!(g["WEBHOOK_TOKEN"], WEBHOOK_DEFAULT_TOKEN);
}

#[test]
fn topics_agree_between_the_local_stack_the_compose_init_step_and_the_constants() {
    let expected: Vec<(String, i32)> = TOPICS.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect();
    assert_eq!(repo::shell_topics("scripts/stack.sh"), expected, "scripts/stack.sh TOPICS");
    assert_eq!(repo::shell_topics("deploy/redpanda/create-topics.sh"), expected, "create-topics.sh TOPICS");
    let parts = |name: &str| TOPICS.iter().find(|(n, _)| *n == name).unwrap().1;
    assert!(
        parts("detector-checkpoints") >= parts("transactions"),
        "the detector needs a checkpoint partition per input partition"
    );
    let script = repo::read("deploy/redpanda/create-topics.sh");
    let compacted =
        format!("COMPACTED=({})", COMPACTED_TOPICS.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(" "));
    assert!(script.contains(&compacted), "create-topics.sh should say {compacted}");
    let c = compose::load_defaults();
    let init = compose::service(&c, "redpanda-init");
    assert_eq!(init["entrypoint"][1].as_str(), Some("/etc/vigil/create-topics.sh"));
    assert_eq!(init["volumes"][0].as_str(), Some("./redpanda/create-topics.sh:/etc/vigil/create-topics.sh:ro"));
}

#[test]
fn the_topic_init_script_creates_each_missing_topic_once_with_its_partitions_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rpk.log");
    let fake = dir.path().join("rpk");
    // A stand-in for rpk: logs its arguments; `topic describe` succeeds for topics in $EXISTING.
    std::fs::write(
        &fake,
        format!(
            "#!/usr/bin/env bash\necho \"$*\" >> {}\nif [ \"$1 $2\" = \"topic describe\" ]; then\n  for t in $EXISTING; do [ \"$t\" = \"$3\" ] && exit 0; done\n  exit 1\nfi\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    tools::run_ok(Command::new("chmod").arg("+x").arg(&fake));
    let run = |existing: &str| {
        let _ = std::fs::remove_file(&log);
        tools::run_ok(
            Command::new("bash")
                .arg(repo::path("deploy/redpanda/create-topics.sh"))
                .env("RPK", &fake)
                .env("KAFKA_BROKERS", "redpanda:9092")
                .env("REDPANDA_ADMIN", "redpanda:9644")
                .env("EXISTING", existing),
        );
        std::fs::read_to_string(&log).unwrap()
    };
    let calls = run("");
    let x = "-X brokers=redpanda:9092 -X admin.hosts=redpanda:9644";
    assert!(calls.contains(&format!("cluster config set auto_create_topics_enabled false {x}")), "{calls}");
    for (name, parts) in TOPICS {
        let compact = if COMPACTED_TOPICS.contains(&name) { " --topic-config cleanup.policy=compact" } else { "" };
        let create = format!("topic create {name} --partitions {parts} --replicas 1{compact} {x}\n");
        assert_eq!(calls.matches(&create).count(), 1, "expected `{create}` once in:\n{calls}");
    }
    // Run again on a broker that has them all: nothing is created.
    let all: Vec<&str> = TOPICS.iter().map(|(n, _)| *n).collect();
    let calls = run(&all.join(" "));
    assert!(!calls.contains("topic create"), "{calls}");
}

#[test]
fn the_dockerfile_caches_dependencies_and_runs_the_four_services_unprivileged_on_debian_slim() {
    let text = repo::read("deploy/Dockerfile");
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let pos = |needle: &str| {
        lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("Dockerfile lacks {needle:?}"))
    };
    // The dependency layer: cooked from the recipe before the sources are copied in.
    assert!(pos("cargo chef prepare") < pos("cargo chef cook"));
    let builder = pos("AS builder");
    let copy_sources =
        lines.iter().enumerate().skip(builder).find(|(_, l)| l.starts_with("COPY . .")).map(|(i, _)| i).unwrap();
    assert!(pos("cargo chef cook") < copy_sources, "dependencies must be built before the sources are copied");
    let build = pos("cargo build --release --locked");
    for bin in VIGIL_SERVICES.iter().chain(&["simulator"]) {
        assert!(lines[build].contains(&format!("--bin {bin}")), "the image lacks {bin}");
    }
    let runtime = pos("AS runtime");
    assert!(lines[runtime].contains("debian:") && lines[runtime].contains("-slim"), "{}", lines[runtime]);
    let user = lines.iter().skip(runtime).find(|l| l.starts_with("USER ")).expect("the runtime stage sets USER");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(lines.iter().skip(runtime).all(|l| !l.contains("cargo")), "no toolchain in the runtime image");
    // The build context leaves target/ out.
    assert!(repo::read("deploy/Dockerfile.dockerignore").lines().any(|l| l.trim() == "target/"));
}

#[test]
fn compose_interpolation_leaves_no_dollar_but_the_shell_ones() {
    // After interpolation, a `$` can only be one the compose file escaped ($$) for a shell.
    fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.contains('$') => out.push(format!("{path}: {s}")),
            Value::Sequence(s) => s.iter().enumerate().for_each(|(i, x)| walk(x, &format!("{path}[{i}]"), out)),
            Value::Mapping(m) => {
                m.iter().for_each(|(k, x)| walk(x, &format!("{path}.{}", k.as_str().unwrap_or("?")), out))
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(&compose::load_defaults(), "", &mut found);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].starts_with(".services.alertmanager.command"), "{found:?}");
}

#[test]
fn the_simulator_streams_a_known_scenario_to_the_producer_once_the_pipeline_is_ready() {
    let c = compose::load_defaults();
    let sim = compose::service(&c, "simulator");
    let command: Vec<&str> = sim["command"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    // As `make run` does: 90 minutes of history at once, then live, looping.
    assert_eq!(command, ["simulator", "run", "--start", "now-90m", "--speed", "1", "--loop"]);
    let env = compose::environment(&c, "simulator");
    assert_eq!(env["PRODUCER_URL"], format!("http://producer:{}", service("producer").port));
    assert_eq!(env["SIMULATOR_TARGET"], "http");
    // The scenario exists: the binary shows it.
    let scenario = &env["SIMULATOR_SCENARIO"];
    tools::run_ok(Command::new(tools::service_binary("simulator")).env_clear().args(["show", scenario]));
    for dep in ["producer", "detector", "sink"] {
        assert_eq!(sim["depends_on"][dep]["condition"].as_str(), Some("service_healthy"), "simulator -> {dep}");
    }
    // Its flags are the binary's own.
    let help = tools::run_ok(Command::new(tools::service_binary("simulator")).env_clear().args(["run", "--help"]));
    for flag in ["--start", "--speed", "--loop", "SIMULATOR_SCENARIO", "SIMULATOR_TARGET", "PRODUCER_URL"] {
        assert!(help.contains(flag), "simulator run does not know {flag}");
    }
}

#[test]
fn the_readme_quotes_the_stacks_ports_topics_and_credentials() {
    let readme = repo::read("README.md");
    for s in SERVICES.iter().filter(|s| s.published) {
        assert!(readme.contains(&format!("localhost:{}", s.port)), "README lacks {}'s port {}", s.name, s.port);
    }
    for needle in [
        format!("localhost:{GRAFANA_PORT}"),
        format!("login {GRAFANA_ADMIN_USER}/{GRAFANA_ADMIN_PASSWORD}"),
        format!("localhost:{PROMETHEUS_PORT}"),
        format!("localhost:{ALERTMANAGER_PORT}"),
        format!("localhost:{KAFKA_EXTERNAL_PORT}"),
        KAFKA_BROKERS.to_string(),
        format!("database `{POSTGRES_DB}`, user `{POSTGRES_USER}`"),
        format!("default `{POSTGRES_DEFAULT_PASSWORD}`"),
        GRAFANA_DB_USER.to_string(),
        WEBHOOK_DEFAULT_TOKEN.to_string(),
    ] {
        assert!(readme.contains(&needle), "README lacks {needle:?}");
    }
    for (topic, partitions) in TOPICS {
        assert!(
            readme.contains(&format!("| `{topic}` | {partitions} |")),
            "README's topic table lacks {topic} with {partitions} partitions"
        );
    }
}

/// How a topic's messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Payload {
    /// Avro through vigil-schemas: Confluent-framed when the writer has SCHEMA_REGISTRY_URL,
    /// single-object otherwise. Every reader decodes single-object frames with its embedded
    /// schemas; a Confluent frame only with the registry the writer registered in.
    Avro,
    /// The detector's own checkpoint encoding, written and read by the detector only.
    Checkpoint,
    /// Copies of refused messages as they came, for operators; no service reads them.
    DeadLetter,
    /// JSON (rule settings the webhook publishes for the detector); no schema, no registry.
    Json,
}

/// Who writes and who reads each topic, by the variable that names it in each service's config.
/// Checked against the binaries' `--help` below, so a service that starts reading or writing
/// another topic must be added here.
const FLOWS: [(&str, &[&str], &[&str], Payload); 9] = [
    ("TRANSACTIONS_TOPIC", &["producer"], &["detector", "sink"], Payload::Avro),
    ("PARTIALS_TOPIC", &["detector"], &["detector"], Payload::Avro),
    ("MINUTES_TOPIC", &["detector"], &["sink"], Payload::Avro),
    // The webhook reads anomalies for the outbound push (when OUTBOUND_WEBHOOK_URLS is set).
    ("ANOMALIES_TOPIC", &["detector"], &["sink", "webhook"], Payload::Avro),
    ("VERDICTS_TOPIC", &["detector"], &["producer", "sink"], Payload::Avro),
    ("CHECKPOINT_TOPIC", &["detector"], &["detector"], Payload::Checkpoint),
    ("MERGE_CHECKPOINT_TOPIC", &["detector"], &["detector"], Payload::Checkpoint),
    ("DEAD_LETTER_TOPIC", &["detector", "sink"], &[], Payload::DeadLetter),
    ("SETTINGS_TOPIC", &["webhook"], &["detector"], Payload::Json),
];

/// Each service's effective environment: its binary's defaults, overridden by `env`.
fn effective(
    defaults: &BTreeMap<String, BTreeMap<String, String>>,
    name: &str,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut e = defaults[name].clone();
    e.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    e
}

/// Every way a reader in `envs` (service -> effective environment) could fail to decode what a
/// writer of the same topic writes, or read another topic than the one written.
fn decode_problems(envs: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<String> {
    let mut problems = Vec::new();
    for (var, writers, readers, payload) in FLOWS {
        let get = |svc: &str, v: &str| envs[svc].get(v).cloned().unwrap_or_default();
        // The webhook only reads anomalies when its forwarder runs.
        let active_readers: Vec<&str> = readers
            .iter()
            .copied()
            .filter(|r| *r != "webhook" || !get("webhook", "OUTBOUND_WEBHOOK_URLS").trim().is_empty())
            .collect();
        let topic = get(writers[0], var);
        for svc in writers.iter().chain(&active_readers) {
            if get(svc, var) != topic {
                problems.push(format!("{svc}'s {var} is {:?}, {}'s is {topic:?}", get(svc, var), writers[0]));
            }
        }
        if payload != Payload::Avro {
            continue;
        }
        for w in writers {
            let registry = get(w, "SCHEMA_REGISTRY_URL");
            if registry.trim().is_empty() {
                // Single-object frames: every reader decodes them with its embedded schemas.
                continue;
            }
            for r in &active_readers {
                let theirs = get(r, "SCHEMA_REGISTRY_URL");
                if theirs != registry {
                    problems.push(format!(
                        "{r} reads {topic} ({var}), which {w} writes Confluent-framed with ids of the registry \
                         {registry}, but {r}'s SCHEMA_REGISTRY_URL is {theirs:?}: it cannot decode them"
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn every_consumer_in_compose_is_configured_to_decode_what_the_producers_of_its_topic_write() {
    let defaults: BTreeMap<String, BTreeMap<String, String>> =
        VIGIL_SERVICES.iter().map(|s| ((*s).to_owned(), help_defaults(s))).collect();
    // The table is the binaries' own: each topic variable a service reads is in it for that
    // service, and each service it names for a variable reads that variable.
    for svc in VIGIL_SERVICES {
        let vars: BTreeSet<&str> = defaults[svc].keys().map(String::as_str).filter(|v| v.ends_with("_TOPIC")).collect();
        let listed: BTreeSet<&str> =
            FLOWS.iter().filter(|(_, w, r, _)| w.contains(&svc) || r.contains(&svc)).map(|(v, _, _, _)| *v).collect();
        assert_eq!(vars, listed, "{svc}: the topics its --help names vs the FLOWS table");
    }
    assert_eq!(FLOWS.len(), TOPIC_VARS.len(), "every topic has its writers and readers");

    let c = compose::load_defaults();
    let envs: BTreeMap<String, BTreeMap<String, String>> = VIGIL_SERVICES
        .iter()
        .map(|s| ((*s).to_owned(), effective(&defaults, s, &compose::environment(&c, s))))
        .collect();
    // Compose turns the outbound push on (so the webhook is one of the anomalies' readers) and
    // every writer of Avro uses the registry.
    assert!(!envs["webhook"]["OUTBOUND_WEBHOOK_URLS"].is_empty(), "outbound push is on in compose");
    for (_, writers, _, payload) in FLOWS {
        if payload == Payload::Avro {
            for w in writers {
                assert_eq!(envs[*w]["SCHEMA_REGISTRY_URL"], SCHEMA_REGISTRY_URL, "{w} writes through the registry");
            }
        }
    }
    let problems = decode_problems(&envs);
    assert!(problems.is_empty(), "{problems:#?}");

    // The check finds the fault this test was written for: a forwarder without the registry
    // would skip every anomaly as undecodable.
    let mut broken = envs.clone();
    broken.get_mut("webhook").unwrap().remove("SCHEMA_REGISTRY_URL");
    let problems = decode_problems(&broken);
    assert!(problems.len() == 1 && problems[0].starts_with("webhook reads anomalies"), "{problems:#?}");
    // ... and a reader on another topic than the writer's.
    let mut broken = envs.clone();
    broken.get_mut("sink").unwrap().insert("MINUTES_TOPIC".into(), "tx-minutes".into());
    let problems = decode_problems(&broken);
    assert!(problems.iter().any(|p| p.starts_with("sink's MINUTES_TOPIC")), "{problems:#?}");
    // Without the forwarder the webhook reads nothing, and needs no registry.
    let mut off = broken.clone();
    off.get_mut("sink").unwrap().insert("MINUTES_TOPIC".into(), "tx-minute".into());
    off.get_mut("webhook").unwrap().insert("OUTBOUND_WEBHOOK_URLS".into(), String::new());
    off.get_mut("webhook").unwrap().remove("SCHEMA_REGISTRY_URL");
    assert!(decode_problems(&off).is_empty());
    // Single-object frames (no registry anywhere) decode everywhere.
    let mut plain = envs.clone();
    for e in plain.values_mut() {
        e.insert("SCHEMA_REGISTRY_URL".into(), String::new());
    }
    assert!(decode_problems(&plain).is_empty());
}

#[test]
fn the_outbound_push_reaches_the_sample_receiver_which_checks_the_signature() {
    let c = compose::load_defaults();
    let webhook = compose::environment(&c, "webhook");
    let receiver = compose::environment(&c, "alert-receiver");
    let url = reqwest::Url::parse(&webhook["OUTBOUND_WEBHOOK_URLS"]).unwrap();
    assert_eq!(url.host_str(), Some("alert-receiver"), "{url}");
    assert_eq!(url.port(), receiver["RECEIVER_BIND"].rsplit(':').next().unwrap().parse().ok());
    assert_eq!(webhook["OUTBOUND_HMAC_SECRET"], receiver["OUTBOUND_HMAC_SECRET"]);
    assert_eq!(
        compose::service(&c, "webhook")["depends_on"]["alert-receiver"]["condition"].as_str(),
        Some("service_healthy")
    );
    // An operator's secret reaches both.
    let env: BTreeMap<String, String> =
        [("OUTBOUND_HMAC_SECRET".to_owned(), "operator-secret-123456".to_owned())].into();
    let custom = compose::load(&env);
    for name in ["webhook", "alert-receiver"] {
        assert_eq!(compose::environment(&custom, name)["OUTBOUND_HMAC_SECRET"], "operator-secret-123456", "{name}");
    }
    let svc = compose::service(&c, "alert-receiver");
    let mount = svc["volumes"][0].as_str().unwrap();
    assert_eq!(mount, "./alert-receiver/receiver.py:/opt/vigil/receiver.py:ro");

    // The receiver itself, run here as compose runs it (python3, standard library only), on a
    // free port: a delivery signed as the webhook signs it is accepted and printed, a wrong
    // signature and a stale timestamp are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new("python3")
        .arg(repo::path("deploy/alert-receiver/receiver.py"))
        .env_clear()
        .env("OUTBOUND_HMAC_SECRET", &receiver["OUTBOUND_HMAC_SECRET"])
        .env("RECEIVER_BIND", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let result = rt.block_on(async {
        let http = reqwest::Client::new();
        let mut up = false;
        for _ in 0..100 {
            if http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status() == 200) {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(up, "the receiver did not start");
        let secret = receiver["OUTBOUND_HMAC_SECRET"].as_bytes();
        let body = br#"{"id":"amount:merchant:m-7:1","severity":"critical"}"#;
        let post = |ts: i64, sig: String| {
            http.post(format!("{base}/vigil/anomalies"))
                .header("X-Vigil-Timestamp", ts.to_string())
                .header("X-Vigil-Signature", sig)
                .header("X-Vigil-Anomaly-Id", "amount:merchant:m-7:1")
                .body(body.to_vec())
                .send()
        };
        let now = chrono::Utc::now().timestamp();
        let sign = vigil_webhook::outbound::signature::sign;
        let ok = post(now, sign(secret, now, body)).await.unwrap().status();
        let wrong = post(now, sign(b"another-secret", now, body)).await.unwrap().status();
        let stale = post(now - 3600, sign(secret, now - 3600, body)).await.unwrap().status();
        (ok, wrong, stale)
    });
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!((result.0.as_u16(), result.1.as_u16(), result.2.as_u16()), (200, 401, 401));
    let printed = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = printed.lines().filter(|l| l.contains("\"received\"")).collect();
    assert_eq!(lines.len(), 1, "{printed}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["body"]["severity"], "critical");
    assert_eq!(v["anomaly_id"], "amount:merchant:m-7:1");
}

//! deploy/docker-compose.yml as data, with Compose's variable interpolation.

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::repo;

pub const FILE: &str = "deploy/docker-compose.yml";

/// Compose's interpolation of one string: `$$` is a literal `$`; `${VAR}`, `$VAR`,
/// `${VAR:-default}` (default when unset or empty), `${VAR-default}` (when unset),
/// `${VAR:?message}` / `${VAR?message}` (an error when unset).
pub fn interpolate(s: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let expr = &r[..end];
            rest = &r[end + 1..];
            let name_len = expr.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_len);
            let value = env.get(name);
            let set_nonempty = value.is_some_and(|v| !v.is_empty());
            out.push_str(&match op {
                "" => value.cloned().unwrap_or_default(),
                o if o.starts_with(":-") => {
                    if set_nonempty {
                        value.cloned().unwrap_or_default()
                    } else {
                        o[2..].to_owned()
                    }
                }
                o if o.starts_with('-') => value.cloned().unwrap_or_else(|| o[1..].to_owned()),
                o if o.starts_with(":?") || o.starts_with('?') => {
                    if (o.starts_with(':') && !set_nonempty) || value.is_none() {
                        return Err(format!("{name} is required: {}", o.trim_start_matches([':', '?'])));
                    }
                    value.cloned().unwrap_or_default()
                }
                o => return Err(format!("unsupported interpolation ${{{name}{o}}}")),
            });
        } else {
            let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            if name_len == 0 {
                return Err(format!("a lone $ in {s:?} (write $$)"));
            }
            out.push_str(env.get(&rest[..name_len]).map(String::as_str).unwrap_or(""));
            rest = &rest[name_len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolate_tree(v: &mut Value, env: &BTreeMap<String, String>) -> Result<(), String> {
    match v {
        Value::String(s) => *s = interpolate(s, env)?,
        Value::Sequence(seq) => {
            for x in seq {
                interpolate_tree(x, env)?;
            }
        }
        Value::Mapping(m) => {
            for (_, x) in m.iter_mut() {
                interpolate_tree(x, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The compose file parsed and interpolated with `env` (empty: every default applies, as on a
/// machine with no .env file).
pub fn load(env: &BTreeMap<String, String>) -> Value {
    let mut v: Value = serde_yaml::from_str(&repo::read(FILE)).unwrap_or_else(|e| panic!("{FILE} does not parse: {e}"));
    interpolate_tree(&mut v, env).unwrap_or_else(|e| panic!("{FILE}: {e}"));
    v
}

pub fn load_defaults() -> Value {
    load(&BTreeMap::new())
}

pub fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"].get(name).unwrap_or_else(|| panic!("{FILE} has no service {name}"))
}

/// A service's environment, whether written as a map or as a list of NAME=value.
pub fn environment(compose: &Value, name: &str) -> BTreeMap<String, String> {
    let env = &service(compose, name)["environment"];
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("{name}: environment value {other:?} is not a scalar"),
    };
    match env {
        Value::Mapping(m) => m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Value::Sequence(s) => s
            .iter()
            .map(|e| {
                let e = scalar(e);
                let (k, v) = e.split_once('=').unwrap_or((&e, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("{name}: environment {other:?} is neither a map nor a list"),
    }
}

/// Published ports of a service as (host address, host port, container port).
pub fn ports(compose: &Value, name: &str) -> Vec<(String, u16, u16)> {
    service(compose, name)["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|p| {
            let p = p.as_str().unwrap_or_else(|| panic!("{name}: write ports as \"host:container\" strings"));
            let parts: Vec<&str> = p.split(':').collect();
            let (addr, host, container) = match parts.as_slice() {
                [h, c] => ("0.0.0.0", *h, *c),
                [a, h, c] => (*a, *h, *c),
                _ => panic!("{name}: port {p:?} is not [addr:]host:container"),
            };
            (addr.to_owned(), host.parse().unwrap(), container.parse().unwrap())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_apply_when_a_variable_is_unset_or_empty() {
        assert_eq!(interpolate("${A:-x}", &env(&[])).unwrap(), "x");
        assert_eq!(interpolate("${A:-x}", &env(&[("A", "")])).unwrap(), "x");
        assert_eq!(interpolate("${A-x}", &env(&[("A", "")])).unwrap(), "");
        assert_eq!(interpolate("${A:-x}", &env(&[("A", "y")])).unwrap(), "y");
        assert_eq!(interpolate("a$B/c", &env(&[("B", "b")])).unwrap(), "ab/c");
    }

    #[test]
    fn a_double_dollar_is_a_literal_dollar() {
        assert_eq!(interpolate("printf '%s' \"$$TOKEN\"", &env(&[("TOKEN", "t")])).unwrap(), "printf '%s' \"$TOKEN\"");
    }

    #[test]
    fn required_variables_and_lone_dollars_are_errors() {
        assert!(interpolate("${A:?set A}", &env(&[])).is_err());
        assert!(interpolate("cost: 5$", &env(&[])).is_err());
    }
}

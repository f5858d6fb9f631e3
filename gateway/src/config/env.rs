//! Environment overrides of the config file, for containers and service units: every key can
//! be set as `PULSE_<TABLE>__<KEY>`, levels separated by two underscores, in any case:
//! `PULSE_SERVER__LISTEN=0.0.0.0:8080`, `PULSE_SINK__KAFKA__BROKERS=k1:9092,k2:9092`,
//! `PULSE_RATE_LIMITS__IP_REQUESTS__PER_SECOND=50`, `PULSE_SITES__0__ORIGINS='["https://a"]'`
//! (a number picks an entry of `[[sites]]`). The value is read as a TOML value when it is one
//! (a number, `true`, a quoted string, a list) and as a string otherwise. An override wins over
//! the file, also over what the admin API writes to it. Variables without `__`
//! (`PULSE_ADMIN_TOKEN`) are not overrides.

use toml::{Table, Value};

/// The prefix of every override.
const PREFIX: &str = "PULSE_";

/// The overrides among `vars`: each variable's name and its path of keys, with its value.
pub(crate) fn overrides(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, Vec<String>, Value)> {
    let mut out: Vec<_> = vars
        .into_iter()
        .filter_map(|(name, raw)| {
            let path = name.strip_prefix(PREFIX)?;
            if !path.contains("__") {
                return None;
            }
            let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
            Some((name, keys, value(&raw)))
        })
        .collect();
    // Applied in a fixed order whatever the environment's.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `raw` as a TOML value, or as a string.
fn value(raw: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

/// Sets every override in `doc`; lists what could not be set (a key under a value that is not
/// a table, an entry of a list that does not exist).
pub(crate) fn apply(doc: &mut Table, overrides: &[(String, Vec<String>, Value)]) -> Vec<String> {
    let mut root = Value::Table(std::mem::take(doc));
    let mut problems = Vec::new();
    for (name, keys, value) in overrides {
        if keys.iter().any(String::is_empty) {
            problems.push(format!(
                "{name}: an empty key (three underscores in a row?)"
            ));
        } else if let Err(why) = set(&mut root, keys, value.clone()) {
            problems.push(format!("{name}: {why}"));
        }
    }
    if let Value::Table(t) = root {
        *doc = t;
    }
    problems
}

fn set(at: &mut Value, keys: &[String], value: Value) -> Result<(), String> {
    let Some((key, rest)) = keys.split_first() else {
        return Err("no key".into());
    };
    match at {
        Value::Table(t) if rest.is_empty() => {
            t.insert(key.clone(), value);
            Ok(())
        }
        Value::Table(t) => set(
            t.entry(key.clone())
                .or_insert_with(|| Value::Table(Table::new())),
            rest,
            value,
        ),
        Value::Array(items) if !rest.is_empty() => {
            let i: usize = key
                .parse()
                .map_err(|_| format!("{key:?}: a list's entries are named by number"))?;
            let n = items.len();
            let entry = items
                .get_mut(i)
                .ok_or_else(|| format!("entry {i} of a list of {n}"))?;
            set(entry, rest, value)
        }
        _ => Err(format!("{key}: under a value that is not a table")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn paths_values_and_what_is_not_an_override() {
        let o = overrides(vars(&[
            ("PULSE_SERVER__LISTEN", "0.0.0.0:8080"),
            ("PULSE_LIMITS__MAX_BODY_BYTES", "1000"),
            ("PULSE_SERVER__PUBLIC_ORIGINS", "[\"https://a.example\"]"),
            ("PULSE_ADMIN_TOKEN", "secret"),
            ("HOME", "/root"),
        ]));
        let names: Vec<&str> = o.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "PULSE_LIMITS__MAX_BODY_BYTES",
                "PULSE_SERVER__LISTEN",
                "PULSE_SERVER__PUBLIC_ORIGINS"
            ]
        );
        assert_eq!(o[0].1, ["limits", "max_body_bytes"]);
        assert_eq!(o[0].2, Value::Integer(1000));
        assert_eq!(o[1].2, Value::String("0.0.0.0:8080".into()));
        assert!(matches!(o[2].2, Value::Array(_)));
    }

    #[test]
    fn tables_and_list_entries_are_reached_and_mistakes_named() {
        let mut doc: Table =
            toml::from_str("[server]\nlisten = \"127.0.0.1:1\"\n[[sites]]\nkey = \"a\"\n").unwrap();
        let problems = apply(
            &mut doc,
            &overrides(vars(&[
                ("PULSE_SERVER__LISTEN", "0.0.0.0:2"),
                ("PULSE_SINK__KAFKA__BROKERS", "k:9092"),
                ("PULSE_SITES__0__ORIGINS", "[\"https://a.example\"]"),
                ("PULSE_SITES__3__KEY", "x"),
                ("PULSE_SERVER__LISTEN__PORT", "1"),
            ])),
        );
        assert_eq!(doc["server"]["listen"].as_str(), Some("0.0.0.0:2"));
        assert_eq!(doc["sink"]["kafka"]["brokers"].as_str(), Some("k:9092"));
        assert_eq!(
            doc["sites"][0]["origins"][0].as_str(),
            Some("https://a.example")
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("PULSE_SERVER__LISTEN__PORT"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("entry 3 of a list of 1"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_config_from_the_environment_alone_and_its_mistakes() {
        use crate::config::{Config, ConfigError};
        let config = Config::parse_with(
            "",
            vars(&[
                ("PULSE_SERVER__DRAIN_DELAY_MS", "5"),
                ("PULSE_RATE_LIMITS__IP_REQUESTS__PER_SECOND", "50"),
                ("PULSE_RATE_LIMITS__IP_REQUESTS__BURST", "60"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.drain_delay_ms, 5);
        assert_eq!(config.rate_limits.ip_requests.per_second, 50);
        assert_eq!(
            config.limits.max_body_bytes,
            Config::default().limits.max_body_bytes
        );
        // An override wins over the file.
        let config = Config::parse_with(
            "[server]\ndrain_delay_ms = 1\n",
            vars(&[("PULSE_SERVER__DRAIN_DELAY_MS", "7")]),
        )
        .unwrap();
        assert_eq!(config.server.drain_delay_ms, 7);
        // A misspelt key is refused, naming the variable; so is a value that does not check.
        let Err(ConfigError::Parse { message, .. }) =
            Config::parse_with("", vars(&[("PULSE_SERVER__DRAIN_DELAY", "7")]))
        else {
            panic!("a misspelt key must be refused")
        };
        assert!(message.contains("PULSE_SERVER__DRAIN_DELAY"), "{message}");
        assert!(
            Config::parse_with("", vars(&[("PULSE_SCORER__PARTITIONS", "0")])).is_err(),
            "checked like the file"
        );
    }
}

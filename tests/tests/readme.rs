//! The README's configuration reference against the binaries' own `--help`: every flag, its
//! environment variable and its default, in both directions, and each meaning starts with what
//! `--help` says. A flag added, renamed or re-defaulted without the README fails here.

use std::collections::BTreeMap;

use sluice_testkit::browser::workspace_root;
use sluice_testkit::process::binary;

/// What one flag looks like, to `--help` or to the README.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flag {
    env: Option<String>,
    default: Option<String>,
    meaning: String,
}

/// `--help` of `name`, run with no `SLUICE_*` variables so it shows no current values.
fn help_flags(name: &str) -> BTreeMap<String, Flag> {
    let mut command = std::process::Command::new(binary(name));
    command.arg("--help");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SLUICE_")) {
        command.env_remove(key);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{name} --help failed");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut flags = BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if !trimmed.starts_with('-') || line.len() == trimmed.len() {
            continue;
        }
        let long = trimmed
            .split([',', ' '])
            .find(|word| word.starts_with("--"))
            .unwrap_or_else(|| panic!("{name}: no long flag in {line:?}"))
            .to_owned();
        let mut body = String::new();
        while let Some(next) = lines.peek() {
            if next.trim_start().starts_with('-') || next.trim().is_empty() {
                break;
            }
            body.push_str(next.trim());
            body.push(' ');
            lines.next();
        }
        let bracket = |key: &str| {
            let start = body.find(&format!("[{key}: "))? + key.len() + 3;
            let end = start + body[start..].find(']')?;
            Some(body[start..end].to_owned())
        };
        let meaning = body.split(" [").next().unwrap_or("").trim().to_owned();
        flags.insert(
            long,
            Flag {
                env: bracket("env").map(|e| e.trim_end_matches('=').to_owned()),
                default: bracket("default"),
                meaning,
            },
        );
    }
    flags
}

/// The README's table under `heading`: flag → (environment, default, meaning) as written.
fn readme_flags(heading: &str) -> BTreeMap<String, Flag> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("README has no section `## {heading}`"));
    let unquote = |cell: &str| cell.trim().trim_matches('`').to_owned();
    let mut flags = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `-")) {
        let cells: Vec<&str> = row.trim().trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 4, "README row {row:?}");
        let long = cells[0]
            .split(", ")
            .map(unquote)
            .find(|f| f.starts_with("--"))
            .unwrap_or_else(|| panic!("README row without a long flag: {row:?}"));
        let env = Some(unquote(cells[1])).filter(|e| !e.is_empty());
        let default = match cells[2].trim() {
            "" | "(none)" | "(required)" => None,
            other => Some(unquote(other)),
        };
        flags.insert(
            long,
            Flag {
                env,
                default,
                meaning: cells[3].trim().to_owned(),
            },
        );
    }
    flags
}

fn check(binary_name: &str, heading: &str) {
    let help = help_flags(binary_name);
    let readme = readme_flags(heading);
    let names = |m: &BTreeMap<String, Flag>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&readme),
        names(&help),
        "{heading}: the README's flags differ from `{binary_name} --help`"
    );
    let mut problems = Vec::new();
    for (flag, from_help) in &help {
        let written = &readme[flag];
        if written.env != from_help.env {
            problems.push(format!(
                "{flag}: environment {:?} in README, {:?} in --help",
                written.env, from_help.env
            ));
        }
        if written.default != from_help.default {
            problems.push(format!(
                "{flag}: default {:?} in README, {:?} in --help",
                written.default, from_help.default
            ));
        }
        // The README may say more, never something else: its meaning starts with --help's.
        let first_sentence = from_help.meaning.split(". ").next().unwrap_or("");
        if !written.meaning.starts_with(first_sentence) {
            problems.push(format!(
                "{flag}: README says {:?}, --help says {:?}",
                written.meaning, from_help.meaning
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{heading} disagrees with --help:\n{}",
        problems.join("\n")
    );
}

#[test]
fn readme_documents_every_gateway_flag_as_help_does() {
    check("sluice-gateway", "Configuration: `sluice-gateway`");
}

#[test]
fn readme_documents_every_ingest_flag_as_help_does() {
    check("sluice-ingest", "Configuration: `sluice-ingest`");
}

#[test]
fn readme_documents_every_dev_stack_flag_as_help_does() {
    check("sluice-dev", "`sluice-dev`");
}

//! Command-line parsing with the operator contract's exit codes.

use std::fmt::Display;
use std::time::Duration;

/// Exit code for invalid configuration (`EX_USAGE` in sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Parses the command line (and env twins). `--help` and `--version` print and exit 0; any error
/// prints one line and exits [`EXIT_CONFIG`].
pub fn parse_or_exit<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(parsed) => parsed,
        Err(err) => match err.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => err.exit(),
            _ => config_error(first_line(&err.to_string())),
        },
    }
}

/// Prints `<binary>: invalid configuration: <reason>` on one line and exits [`EXIT_CONFIG`].
pub fn config_error(reason: impl Display) -> ! {
    let binary = std::env::args()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "sluice".into());
    let reason = reason.to_string().replace('\n', " ");
    eprintln!("{binary}: invalid configuration: {reason}");
    std::process::exit(EXIT_CONFIG)
}

/// clap's messages span several lines (the error, the missing flags, usage, a hint); the
/// contract is one line, so keep what comes before the usage and join it.
fn first_line(message: &str) -> String {
    let joined = message
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let joined = joined.trim_start_matches("error: ").trim();
    if joined.is_empty() {
        "invalid arguments".to_owned()
    } else {
        joined.to_owned()
    }
}

/// `Err` naming the first flag whose value is zero.
pub fn require_positive(flags: &[(&str, usize)]) -> Result<(), String> {
    match flags.iter().find(|(_, value)| *value == 0) {
        Some((flag, _)) => Err(format!("{flag} must be greater than 0")),
        None => Ok(()),
    }
}

/// Parses `250ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 10s or 2m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{text:?} has an unknown unit; use ms, s, m or h")),
    };
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn keeps_only_the_first_meaningful_line() {
        let text = "error: unexpected argument '--nope' found\n\nUsage: x [OPTIONS]\n";
        assert_eq!(first_line(text), "unexpected argument '--nope' found");
        let missing =
            "error: the following required arguments were not provided:\n  --kafka-brokers <HOST:PORT,…>\n\nUsage: x\n";
        assert_eq!(
            first_line(missing),
            "the following required arguments were not provided: --kafka-brokers <HOST:PORT,…>"
        );
    }
}

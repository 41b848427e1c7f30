//! Command-line parsing with the operator contract's exit codes.

use std::fmt::Display;

/// Exit code for invalid configuration (`EX_USAGE` in sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Parses the command line (and env twins). `--help` and `--version` print and exit 0; any error
/// prints one line and exits [`EXIT_CONFIG`].
pub fn parse_or_exit<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(parsed) => parsed,
        Err(err) => match err.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                err.exit()
            }
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

fn first_line(message: &str) -> String {
    let line = message
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    line.trim_start_matches("error: ").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_first_meaningful_line() {
        let text = "error: unexpected argument '--nope' found\n\nUsage: x [OPTIONS]\n";
        assert_eq!(first_line(text), "unexpected argument '--nope' found");
    }
}

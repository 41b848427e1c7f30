//! Kafka client configuration shared by every Sluice service.

use rdkafka::ClientConfig;

use crate::KafkaError;

/// Properties Sluice sets itself. Overriding them would break a contract (ingest's "a 2xx means
/// Kafka has it", the gateway's "key → partition is murmur2", "nothing is created by asking"),
/// so `--kafka-config` refuses them.
const FIXED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "partitioner",
    "allow.auto.create.topics",
];

/// How to reach Kafka. Flattened into each service's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    #[arg(long = "kafka-brokers", env = "SLUICE_KAFKA_BROKERS", value_name = "HOST:PORT,…")]
    pub brokers: String,

    /// Any librdkafka property, `key=value`, given to every Kafka client (repeatable). This is how
    /// TLS and SASL are set up, e.g. `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`.
    /// In the environment, separate entries with `;`.
    #[arg(
        long = "kafka-config",
        env = "SLUICE_KAFKA_CONFIG",
        value_name = "KEY=VALUE",
        value_delimiter = ';'
    )]
    pub config: Vec<String>,

    /// A file of librdkafka properties, one `key=value` per line (`#` starts a comment), read
    /// before `--kafka-config` (repeatable). Mount SASL credentials from a secret store this way,
    /// so no secret is on the command line or in the environment. In the environment, separate
    /// paths with `,`.
    #[arg(
        long = "kafka-config-file",
        env = "SLUICE_KAFKA_CONFIG_FILE",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub config_files: Vec<std::path::PathBuf>,
}

impl KafkaArgs {
    /// Arguments for a broker at `brokers` with no passthrough properties.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            config: Vec::new(),
            config_files: Vec::new(),
        }
    }

    /// Checks the arguments without connecting: every entry is `key=value`, none overrides a
    /// fixed property, and librdkafka accepts every property name and value.
    pub fn validate(&self) -> Result<(), KafkaError> {
        if self.brokers.trim().is_empty() {
            return Err(KafkaError::InvalidConfig {
                entry: "--kafka-brokers".into(),
                reason: "no bootstrap servers given".into(),
            });
        }
        let config = self.client_config()?;
        // Building the native configuration is where librdkafka checks names and values.
        config.create_native_config().map_err(KafkaError::ClientConfig)?;
        Ok(())
    }

    /// The passthrough properties as `(key, value)` pairs: the files' first, then
    /// `--kafka-config`, so a flag can override a file.
    pub fn properties(&self) -> Result<Vec<(String, String)>, KafkaError> {
        let mut properties = Vec::new();
        for path in &self.config_files {
            let text = std::fs::read_to_string(path).map_err(|e| KafkaError::InvalidConfig {
                entry: format!("--kafka-config-file {}", path.display()),
                reason: e.to_string(),
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    properties.push(parse_entry(line, &format!("{}:{}", path.display(), n + 1))?);
                }
            }
        }
        for entry in self.config.iter().filter(|entry| !entry.trim().is_empty()) {
            properties.push(parse_entry(entry, "--kafka-config")?);
        }
        Ok(properties)
    }

    /// Refuses passthrough properties a service sets itself, with the reason to show (e.g.
    /// which flag to use), so a value is never silently overwritten.
    pub fn refuse(&self, controlled: &[(&str, &str)]) -> Result<(), KafkaError> {
        for (key, _) in self.properties()? {
            if let Some((_, reason)) = controlled.iter().find(|(property, _)| *property == key) {
                return Err(KafkaError::InvalidConfig {
                    entry: format!("--kafka-config {key}=…"),
                    reason: (*reason).to_owned(),
                });
            }
        }
        Ok(())
    }

    /// A client configuration with the bootstrap servers and every passthrough property.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers.trim());
        for (key, value) in self.properties()? {
            config.set(key, value);
        }
        // librdkafka's producer asks the broker to create any topic it looks up (its default is
        // true, unlike the consumer's), so one request naming a missing stream would create it.
        // Topics are created only on purpose (`TopicCreator`), never by asking.
        config.set("allow.auto.create.topics", "false");
        Ok(config)
    }
}

/// Parses one `key=value` entry from `origin` (a flag, or `file:line`). Errors name the key,
/// never the value: values are often secrets.
fn parse_entry(entry: &str, origin: &str) -> Result<(String, String), KafkaError> {
    let invalid = |shown: String, reason: &str| KafkaError::InvalidConfig {
        entry: shown,
        reason: reason.to_owned(),
    };
    let Some((key, value)) = entry.split_once('=') else {
        return Err(invalid(format!("{origin} {entry:?}"), "expected key=value"));
    };
    let key = key.trim();
    let shown = format!("{origin} {key}=…");
    if key.is_empty() {
        return Err(invalid(shown, "the property name is empty"));
    }
    if FIXED_PROPERTIES.contains(&key) {
        return Err(invalid(shown, "Sluice sets this property itself"));
    }
    // As in Java properties files: spaces after the `=` are not part of the value.
    Ok((key.to_owned(), value.trim_start().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: &[&str]) -> KafkaArgs {
        KafkaArgs {
            config_files: Vec::new(),
            brokers: "127.0.0.1:9092".into(),
            config: config.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn passes_properties_through() {
        let config = args(&["security.protocol=SASL_SSL", "sasl.password=a=b"])
            .client_config()
            .unwrap();
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.password"), Some("a=b"), "only the first '=' separates");
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(config.get("allow.auto.create.topics"), Some("false"));
    }

    #[test]
    fn rejects_entries_without_equals_sign() {
        let err = args(&["security.protocol"]).validate().unwrap_err();
        assert!(err.to_string().contains("expected key=value"), "{err}");
    }

    #[test]
    fn refuses_to_override_fixed_properties() {
        for entry in [
            "acks=1",
            "enable.idempotence=false",
            "partitioner=random",
            "allow.auto.create.topics=true",
        ] {
            let err = args(&[entry]).validate().unwrap_err();
            assert!(err.to_string().contains("Sluice sets this property itself"), "{err}");
        }
    }

    #[test]
    fn librdkafka_rejects_unknown_properties() {
        let err = args(&["no.such.property=1"]).validate().unwrap_err();
        assert!(matches!(err, KafkaError::ClientConfig(_)), "{err:?}");
    }

    #[test]
    fn tls_and_sasl_properties_are_accepted() {
        args(&[
            "security.protocol=SASL_SSL",
            "sasl.mechanism=SCRAM-SHA-512",
            "sasl.username=u",
            "sasl.password=p",
        ])
        .validate()
        .unwrap();
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn reads_properties_files_then_flags() {
        let dir = std::env::temp_dir().join(format!("sluice-kafka-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client.properties");
        std::fs::write(
            &path,
            "# SASL\nsasl.username=u\n\n sasl.password = p=q \nclient.id=file\n",
        )
        .unwrap();
        let args = KafkaArgs {
            brokers: "k:9092".into(),
            config: vec!["client.id=flag".into()],
            config_files: vec![path.clone()],
        };
        let config = args.client_config().unwrap();
        assert_eq!(config.get("sasl.username"), Some("u"));
        assert_eq!(
            config.get("sasl.password"),
            Some("p=q"),
            "the value after the first '=', trimmed"
        );
        assert_eq!(config.get("client.id"), Some("flag"), "a flag overrides the file");
        std::fs::write(&path, "acks=0\n").unwrap();
        let err = args.validate().unwrap_err().to_string();
        assert!(err.contains("client.properties:1") && err.contains("acks=…"), "{err}");
        let missing = KafkaArgs {
            config_files: vec![dir.join("nope")],
            ..args
        };
        assert!(missing
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--kafka-config-file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_never_show_values() {
        let args = KafkaArgs {
            brokers: "k:9092".into(),
            config: vec!["acks=secret-looking".into()],
            config_files: Vec::new(),
        };
        let err = args.validate().unwrap_err().to_string();
        assert!(!err.contains("secret-looking"), "{err}");
    }
}

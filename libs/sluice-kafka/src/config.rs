//! Kafka client configuration shared by every Sluice service.

use rdkafka::ClientConfig;

use crate::KafkaError;

/// Properties Sluice sets itself. Overriding them would break a contract (ingest's "a 2xx means
/// Kafka has it", the gateway's "key → partition is murmur2"), so `--kafka-config` refuses them.
const FIXED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "partitioner",
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
}

impl KafkaArgs {
    /// Arguments for a broker at `brokers` with no passthrough properties.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            config: Vec::new(),
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

    /// The passthrough properties as `(key, value)` pairs.
    pub fn properties(&self) -> Result<Vec<(String, String)>, KafkaError> {
        self.config
            .iter()
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| {
                let invalid = |reason: &str| KafkaError::InvalidConfig {
                    entry: entry.clone(),
                    reason: reason.to_owned(),
                };
                let (key, value) = entry.split_once('=').ok_or_else(|| invalid("expected key=value"))?;
                let key = key.trim();
                if key.is_empty() {
                    return Err(invalid("the property name is empty"));
                }
                if FIXED_PROPERTIES.contains(&key) {
                    return Err(invalid("Sluice sets this property itself"));
                }
                Ok((key.to_owned(), value.to_owned()))
            })
            .collect()
    }

    /// Refuses passthrough properties a service sets itself, with the reason to show (e.g.
    /// which flag to use), so a value is never silently overwritten.
    pub fn refuse(&self, controlled: &[(&str, &str)]) -> Result<(), KafkaError> {
        for (key, _) in self.properties()? {
            if let Some((_, reason)) = controlled.iter().find(|(property, _)| *property == key) {
                return Err(KafkaError::InvalidConfig {
                    entry: format!("{key}=…"),
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
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: &[&str]) -> KafkaArgs {
        KafkaArgs {
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
    }

    #[test]
    fn rejects_entries_without_equals_sign() {
        let err = args(&["security.protocol"]).validate().unwrap_err();
        assert!(err.to_string().contains("expected key=value"), "{err}");
    }

    #[test]
    fn refuses_to_override_fixed_properties() {
        for entry in ["acks=1", "enable.idempotence=false", "partitioner=random"] {
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

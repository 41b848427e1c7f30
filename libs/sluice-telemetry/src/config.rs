//! The standard `OTEL_*` variables, read and checked once at start.
//!
//! The SDK reads some of them itself and ignores values it does not understand; an operator who
//! mistypes a sampler or a protocol would then get a silently different setup. So every value
//! Sluice relies on is checked here first, and a bad one stops the service like any other bad
//! flag (exit 64, one line naming the variable).

use opentelemetry_sdk::trace::Sampler;

pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const SAMPLER: &str = "OTEL_TRACES_SAMPLER";
pub const SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// A variable whose value Sluice cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    fn new(variable: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            variable,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

/// What the environment asks for, when it names an endpoint.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The endpoint as given; the OTLP exporter resolves it (and appends `/v1/traces` over HTTP
    /// for the generic variable) exactly as the specification says.
    pub endpoint: String,
    pub protocol: Protocol,
    pub sampler: Sampler,
    /// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names one.
    pub default_service_name: String,
}

impl Settings {
    /// `Ok(None)` when no endpoint is set: tracing is off and costs nothing.
    pub fn from_env(default_service_name: &str) -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(default_service_name, |name| std::env::var(name).ok())
    }

    /// [`Settings::from_env`] over any variable lookup (tests pass a map).
    pub fn from_lookup(
        default_service_name: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let non_empty = |name: &'static str| var(name).filter(|v| !v.trim().is_empty()).map(|v| (name, v));
        let Some((endpoint_var, endpoint)) = non_empty(TRACES_ENDPOINT).or_else(|| non_empty(ENDPOINT)) else {
            return Ok(None);
        };
        check_endpoint(endpoint_var, &endpoint)?;
        let protocol = match non_empty(TRACES_PROTOCOL).or_else(|| non_empty(PROTOCOL)) {
            Some((name, value)) => parse_protocol(name, &value)?,
            None => Protocol::HttpProtobuf,
        };
        let sampler = parse_sampler(
            var(SAMPLER).filter(|v| !v.trim().is_empty()).as_deref(),
            var(SAMPLER_ARG).filter(|v| !v.trim().is_empty()).as_deref(),
        )?;
        if let Some(attributes) = var(RESOURCE_ATTRIBUTES) {
            check_resource_attributes(&attributes)?;
        }
        Ok(Some(Self {
            endpoint,
            protocol,
            sampler,
            default_service_name: default_service_name.to_owned(),
        }))
    }
}

fn check_endpoint(variable: &'static str, value: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(value.trim()).map_err(|e| ConfigError::new(variable, value, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(variable, value, "expected an http:// or https:// URL"));
    }
    Ok(())
}

fn parse_protocol(variable: &'static str, value: &str) -> Result<Protocol, ConfigError> {
    match value.trim() {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        "http/json" => Ok(Protocol::HttpJson),
        _ => Err(ConfigError::new(
            variable,
            value,
            "expected grpc, http/protobuf or http/json",
        )),
    }
}

/// The specification's sampler names; parent-based "always on" when unset, so a sampled
/// incoming `traceparent` is always followed and an unsampled one never.
fn parse_sampler(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        let Some(arg) = arg else { return Ok(1.0) };
        match arg.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(ConfigError::new(SAMPLER_ARG, arg, "expected a ratio between 0 and 1")),
        }
    };
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    Ok(match name.map(str::trim).unwrap_or("parentbased_always_on") {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" => parent_based(Sampler::AlwaysOn),
        "parentbased_always_off" => parent_based(Sampler::AlwaysOff),
        "parentbased_traceidratio" => parent_based(Sampler::TraceIdRatioBased(ratio()?)),
        other => {
            return Err(ConfigError::new(
                SAMPLER,
                other,
                "expected always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio",
            ))
        }
    })
}

/// `key=value` pairs joined by `,` (the SDK would drop a malformed pair without a word).
fn check_resource_attributes(value: &str) -> Result<(), ConfigError> {
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, _)) if !key.trim().is_empty() => {}
            _ => {
                return Err(ConfigError::new(
                    RESOURCE_ATTRIBUTES,
                    value,
                    format!("{pair:?} is not key=value"),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup("sluice-test", |name| map.get(name).cloned())
    }

    #[test]
    fn no_endpoint_means_tracing_is_off() {
        assert!(settings(&[]).unwrap().is_none());
        assert!(settings(&[(ENDPOINT, " "), (SAMPLER, "always_on")]).unwrap().is_none());
    }

    #[test]
    fn reads_the_endpoint_protocol_and_sampler() {
        let s = settings(&[(ENDPOINT, "http://collector:4318")]).unwrap().unwrap();
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert!(matches!(s.sampler, Sampler::ParentBased(_)));
        let s = settings(&[
            (TRACES_ENDPOINT, "http://collector:4317"),
            (PROTOCOL, "http/json"),
            (TRACES_PROTOCOL, "grpc"),
            (SAMPLER, "parentbased_traceidratio"),
            (SAMPLER_ARG, "0.01"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://collector:4317");
        assert_eq!(s.protocol, Protocol::Grpc);
    }

    #[test]
    fn refuses_values_it_cannot_use_naming_the_variable() {
        let with_endpoint = |var: &'static str, value: &'static str| {
            settings(&[(ENDPOINT, "http://localhost:4317"), (var, value)]).unwrap_err()
        };
        assert_eq!(with_endpoint(PROTOCOL, "thrift").variable, PROTOCOL);
        assert_eq!(with_endpoint(SAMPLER, "sometimes").variable, SAMPLER);
        assert_eq!(with_endpoint(RESOURCE_ATTRIBUTES, "team").variable, RESOURCE_ATTRIBUTES);
        let ratio = settings(&[
            (ENDPOINT, "http://localhost:4317"),
            (SAMPLER, "traceidratio"),
            (SAMPLER_ARG, "2"),
        ]);
        assert_eq!(ratio.unwrap_err().variable, SAMPLER_ARG);
        assert_eq!(
            settings(&[(ENDPOINT, "localhost:4317")]).unwrap_err().variable,
            ENDPOINT
        );
        assert_eq!(
            settings(&[(TRACES_ENDPOINT, "ftp://x")]).unwrap_err().variable,
            TRACES_ENDPOINT
        );
    }
}

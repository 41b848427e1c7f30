//! Auth failures by reason, registered under each service's prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::AuthError;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    pub reason: &'static str,
}

/// `<prefix>_auth_failures_total{reason}`.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    pub failures: Family<FailureLabel, Counter>,
}

impl AuthMetrics {
    /// Registers in `registry`, which the caller has already prefixed (`sluice_gateway`, …).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "auth_failures",
            "Requests refused by access control, by reason",
            m.failures.clone(),
        );
        m
    }

    pub fn failed(&self, err: &AuthError) {
        self.failures
            .get_or_create(&FailureLabel { reason: err.reason() })
            .inc();
    }
}

//! `sluice-gateway`: the shared service `main` around [`sluice_gateway::run`].

#[tokio::main]
async fn main() {
    sluice_runtime::service::main::<sluice_gateway::GatewayConfig>().await;
}

//! `sluice-ingest`: the shared service `main` around [`sluice_ingest::run`].

#[tokio::main]
async fn main() {
    sluice_runtime::service::main::<sluice_ingest::IngestConfig>().await;
}

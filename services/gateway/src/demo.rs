//! The demo page (`--demo-page`): a live view of one stream, or of several in one connection,
//! for people trying Sluice locally.
//!
//! One static HTML file (`demo.html`, compiled in) whose script uses the browser's own
//! `EventSource`, shows the cursor, publishes through ingest, drops its connection and switches
//! gateway to show a resume. Following several streams (`orders,payments`), events come named
//! `<stream>:<type>`, and `EventSource` hands a named event only to a listener for that name: the
//! page listens for every followed stream × every type it knows (a few common ones, `?types=`,
//! and each type published from the page). The only server-side part is the settings object
//! injected into the page; the page's query string (`?streams=…&from=…&types=…&gateways=…&ingest=…`)
//! overrides it.
//!
//! Off by default: a production gateway serves only the API.

use actix_web::{web, HttpResponse};
use serde::Serialize;

const PAGE: &str = include_str!("demo.html");

/// The placeholder in `demo.html` replaced by the settings as a JSON object.
const SETTINGS_SLOT: &str = "/*SLUICE_DEMO_SETTINGS*/{}";

/// What the page starts with.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSettings {
    /// The stream shown first; several joined by `,` are followed in one connection.
    pub stream: String,
    /// Where the publish form posts; unset: port 8090 on the page's host.
    pub ingest_url: Option<String>,
    /// Gateways the "switch gateway" button cycles through; unset: only the page's own.
    pub gateways: Vec<String>,
    /// A token the page streams and publishes with, when access control is on (the dev stack's
    /// `--auth` puts one here; never a production gateway, which serves no demo page).
    pub token: Option<String>,
}

impl Default for DemoSettings {
    fn default() -> Self {
        DemoSettings {
            stream: "ticker".to_owned(),
            ingest_url: None,
            gateways: Vec::new(),
            token: None,
        }
    }
}

impl DemoSettings {
    /// The page with these settings in it.
    pub fn render(&self) -> String {
        let json = serde_json::to_string(self).expect("settings serialise");
        // Inside a <script>, `</script>` would end it; escaping `<` keeps any value inert.
        PAGE.replacen(SETTINGS_SLOT, &json.replace('<', "\\u003c"), 1)
    }
}

/// `GET /`: the page.
pub async fn page(settings: web::Data<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(settings.get_ref().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_injected_and_cannot_close_the_script() {
        assert!(PAGE.contains(SETTINGS_SLOT), "demo.html lost its settings slot");
        let settings = DemoSettings {
            stream: "s</script><script>alert(1)//".to_owned(),
            ingest_url: Some("http://127.0.0.1:8090".to_owned()),
            gateways: vec!["http://127.0.0.1:8080".to_owned()],
            token: None,
        };
        let page = settings.render();
        assert!(!page.contains(SETTINGS_SLOT));
        assert!(page.contains(r#""ingest_url":"http://127.0.0.1:8090""#));
        assert!(!page.contains("s</script>"));
        assert_eq!(page.matches("</script>").count(), PAGE.matches("</script>").count());
    }
}

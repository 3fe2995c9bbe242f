//! What Google's client libraries ask the metadata server on Cloud Run: the
//! instance's region, zone and id, the universe domain, and the `alt` and
//! `recursive` forms of every entry.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{bounded, client, emulator, metadata_get, url};

const V1: &str = "/computeMetadata/v1";
const EMAIL: &str = "calling-service-sa@local-project.iam.gserviceaccount.com";

async fn project_number(addr: std::net::SocketAddr) -> String {
    let (status, _, number) = metadata_get(addr, &format!("{V1}/project/numeric-project-id")).await;
    assert_eq!(status, StatusCode::OK);
    number
}

#[tokio::test]
async fn region_zone_and_id_as_on_cloud_run() {
    bounded(async {
        let server = emulator().await;
        let addr = server.addr();
        let number = project_number(addr).await;
        for (path, expected) in [
            (
                "instance/region",
                format!("projects/{number}/regions/us-central1"),
            ),
            (
                "instance/zone",
                format!("projects/{number}/zones/us-central1-1"),
            ),
            ("universe/universe-domain", "googleapis.com".to_owned()),
        ] {
            let (status, content_type, body) = metadata_get(addr, &format!("{V1}/{path}")).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type, "application/text", "{path}");
            assert_eq!(body, expected, "{path}");
        }
        let (status, _, id) = metadata_get(addr, &format!("{V1}/instance/id")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(id.len(), 19, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
        // Stable: the same on every start with the same settings.
        let again = emulator().await;
        let (_, _, other) = metadata_get(again.addr(), &format!("{V1}/instance/id")).await;
        assert_eq!(id, other);
    })
    .await;
}

#[tokio::test]
async fn directories_list_the_new_entries() {
    bounded(async {
        let server = emulator().await;
        let addr = server.addr();
        for (path, expected) in [
            ("/", "instance/\nproject/\nuniverse/\n".to_owned()),
            (
                "/instance/",
                "id\nregion\nservice-accounts/\nzone\n".to_owned(),
            ),
            (
                "/instance/service-accounts/",
                format!("default/\n{EMAIL}/\n"),
            ),
            ("/universe/", "universe-domain\n".to_owned()),
        ] {
            let (status, content_type, body) = metadata_get(addr, &format!("{V1}{path}")).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type, "application/text", "{path}");
            assert_eq!(body, expected, "{path}");
        }
    })
    .await;
}

#[tokio::test]
async fn recursive_json_covers_the_whole_tree() {
    bounded(async {
        let server = emulator().await;
        let addr = server.addr();
        let number: u64 = project_number(addr).await.parse().expect("number");
        let (status, content_type, body) =
            metadata_get(addr, &format!("{V1}/?recursive=true")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let tree: serde_json::Value = serde_json::from_str(&body).expect("json");
        let account = json!({
            "aliases": ["default"],
            "email": EMAIL,
            "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
        });
        let id = tree["instance"]["id"].as_u64().expect("a number");
        assert_eq!(
            tree,
            json!({
                "instance": {
                    "id": id,
                    "region": format!("projects/{number}/regions/us-central1"),
                    "serviceAccounts": {"default": account, EMAIL: account},
                    "zone": format!("projects/{number}/zones/us-central1-1"),
                },
                "project": {"numericProjectId": number, "projectId": "local-project"},
                "universe": {"universeDomain": "googleapis.com"},
            })
        );
    })
    .await;
}

#[tokio::test]
async fn alt_json_encodes_values_and_listings() {
    bounded(async {
        let server = emulator().await;
        let addr = server.addr();
        let number: u64 = project_number(addr).await.parse().expect("number");
        let sa = format!("{V1}/instance/service-accounts/default");
        for (path, expected) in [
            (
                format!("{V1}/project/project-id?alt=json"),
                json!("local-project"),
            ),
            (
                format!("{V1}/project/numeric-project-id?alt=json"),
                json!(number),
            ),
            (format!("{sa}/email?alt=json"), json!(EMAIL)),
            (
                format!("{sa}/scopes?alt=json"),
                json!(["https://www.googleapis.com/auth/cloud-platform"]),
            ),
            (
                format!("{V1}/instance/?alt=json"),
                json!(["id", "region", "service-accounts/", "zone"]),
            ),
            (
                format!("{V1}/project/?recursive=true&alt=json"),
                json!({"numericProjectId": number, "projectId": "local-project"}),
            ),
        ] {
            let (status, content_type, body) = metadata_get(addr, &path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type, "application/json", "{path}");
            let value: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert_eq!(value, expected, "{path}");
        }
    })
    .await;
}

#[tokio::test]
async fn alt_text_flattens_recursive_answers() {
    bounded(async {
        let server = emulator().await;
        let addr = server.addr();
        let number = project_number(addr).await;
        let sa = format!("{V1}/instance/service-accounts/default");
        for (path, expected) in [
            (
                format!("{sa}/?recursive=true&alt=text"),
                format!(
                    "aliases/0 default\nemail {EMAIL}\nscopes/0 https://www.googleapis.com/auth/cloud-platform\n"
                ),
            ),
            (
                format!("{V1}/project/?recursive=true&alt=text"),
                format!("numeric-project-id {number}\nproject-id local-project\n"),
            ),
            (format!("{V1}/project/project-id?alt=text"), "local-project".to_owned()),
            (
                format!("{sa}/scopes?alt=text"),
                "https://www.googleapis.com/auth/cloud-platform\n".to_owned(),
            ),
            (format!("{V1}/universe/?alt=text"), "universe-domain\n".to_owned()),
        ] {
            let (status, content_type, body) = metadata_get(addr, &path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type, "application/text", "{path}");
            assert_eq!(body, expected, "{path}");
        }
    })
    .await;
}

#[tokio::test]
async fn an_unknown_alt_is_a_bad_request() {
    bounded(async {
        let server = emulator().await;
        for path in [
            format!("{V1}/project/project-id?alt=xml"),
            format!("{V1}/instance/?recursive=true&alt="),
        ] {
            let (status, _, body) = metadata_get(server.addr(), &path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
            assert!(body.contains("alt"), "{body}");
        }
    })
    .await;
}

#[tokio::test]
async fn every_answer_carries_the_flavor_header() {
    bounded(async {
        let server = emulator().await;
        let addr = server.addr();
        let get = |path: &str, flavor: bool| {
            let mut request = client().get(url(addr, path));
            if flavor {
                request = request.header("Metadata-Flavor", "Google");
            }
            request
        };
        let requests = [
            (get("/", false), 200),
            (get("/oauth2/v3/certs", false), 200),
            (get(&format!("{V1}/instance/region"), true), 200),
            (get(&format!("{V1}/instance"), true), 301),
            (get(&format!("{V1}/project/project-id?alt=xml"), true), 400),
            (get(&format!("{V1}/instance/region"), false), 403),
            (
                get(&format!("{V1}/instance/region"), true).header("Host", "evil.example"),
                403,
            ),
            (get(&format!("{V1}/instance/nothing"), true), 404),
            (
                client()
                    .post(url(addr, &format!("{V1}/instance/id")))
                    .header("Metadata-Flavor", "Google"),
                405,
            ),
        ];
        for (request, expected) in requests {
            let response = request.send().await.expect("response");
            let status = response.status();
            assert_eq!(status.as_u16(), expected, "{}", response.url());
            assert_eq!(
                response.headers()["metadata-flavor"],
                "Google",
                "{}",
                response.url()
            );
        }
    })
    .await;
}

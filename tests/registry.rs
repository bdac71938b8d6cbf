//! The schema registry client against the Confluent-API stand-in: ids,
//! caching, compatibility rules and error classification, plus the
//! stand-in's own REST shapes.

mod support;

use serde_json::{Value, json};
use siphon::avro::registry::{RegistryClient, RegistryClientConfig, RegistryError, Target};
use support::registry::RegistryStandIn;

const SUBJECT: &str = "shop.public.orders-value";

const V1: &str = r#"{"type":"record","name":"Value","namespace":"shop.public.orders","fields":[
    {"name":"id","type":"long"},
    {"name":"status","type":"string"}
]}"#;

/// V1 plus a nullable column with default null: BACKWARD compatible.
const V2_NULLABLE_ADDED: &str = r#"{"type":"record","name":"Value","namespace":"shop.public.orders","fields":[
    {"name":"id","type":"long"},
    {"name":"status","type":"string"},
    {"name":"note","type":["null","string"],"default":null}
]}"#;

/// V1 plus a required column without default: new readers cannot read old data.
const V2_REQUIRED_ADDED: &str = r#"{"type":"record","name":"Value","namespace":"shop.public.orders","fields":[
    {"name":"id","type":"long"},
    {"name":"status","type":"string"},
    {"name":"amount","type":"long"}
]}"#;

/// V1 with `status` changed from string to int.
const V2_STATUS_INT: &str = r#"{"type":"record","name":"Value","namespace":"shop.public.orders","fields":[
    {"name":"id","type":"long"},
    {"name":"status","type":"int"}
]}"#;

fn client_for(url: &str) -> RegistryClient {
    RegistryClient::new(&RegistryClientConfig {
        url: url.to_owned(),
        username: None,
        password: None,
        request_timeout_ms: 5_000,
        root_cert_file: None,
    })
    .unwrap()
}

fn same_json(a: &str, b: &str) -> bool {
    serde_json::from_str::<Value>(a).unwrap() == serde_json::from_str::<Value>(b).unwrap()
}

#[tokio::test]
async fn register_returns_stable_ids_and_caches_them() {
    let registry = RegistryStandIn::start().await;
    let client = client_for(&registry.url);

    let id = client.register(SUBJECT, V1).await.unwrap();
    let after_first = registry.request_count();
    assert_eq!(after_first, 1);

    // Same schema, other formatting and key order: answered from the cache.
    let reformatted = r#"{"namespace":"shop.public.orders","name":"Value","type":"record",
        "fields":[{"type":"long","name":"id"},{"type":"string","name":"status"}]}"#;
    assert_eq!(client.register(SUBJECT, V1).await.unwrap(), id);
    assert_eq!(client.register(SUBJECT, reformatted).await.unwrap(), id);
    assert_eq!(
        registry.request_count(),
        after_first,
        "cached register sent a request"
    );

    // Clones share the cache.
    assert_eq!(client.clone().register(SUBJECT, V1).await.unwrap(), id);
    assert_eq!(registry.request_count(), after_first);

    // A fresh client asks again; the registry is idempotent.
    let fresh = client_for(&format!("{}/", registry.url));
    assert_eq!(fresh.register(SUBJECT, V1).await.unwrap(), id);
    assert_eq!(fresh.versions(SUBJECT).await.unwrap(), vec![1]);

    // Same schema in another subject: the same global id, as Confluent does.
    let key_subject = "shop.public.orders-other";
    assert_eq!(client.register(key_subject, V1).await.unwrap(), id);
    assert_eq!(client.versions(key_subject).await.unwrap(), vec![1]);
}

#[tokio::test]
async fn schema_by_id_round_trips_and_is_cached() {
    let registry = RegistryStandIn::start().await;
    let client = client_for(&registry.url);
    // Debezium's connect.* properties on primitive types must survive the registry.
    let schema = r#"{"type":"record","name":"Value","namespace":"shop.public.orders","fields":[
        {"name":"id","type":"long"},
        {"name":"created","type":{"type":"long","connect.version":1,"connect.name":"io.debezium.time.MicroTimestamp"}}
    ]}"#;
    let id = client.register(SUBJECT, schema).await.unwrap();

    let fetched = client.schema_by_id(id).await.unwrap();
    assert!(same_json(&fetched, schema), "{fetched}");
    let count = registry.request_count();
    assert_eq!(client.schema_by_id(id).await.unwrap(), fetched);
    assert_eq!(
        registry.request_count(),
        count,
        "cached schema_by_id sent a request"
    );

    let err = client.schema_by_id(id + 100).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::NotFound {
                target: Target::SchemaId(_),
                error_code: Some(40403),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn backward_compatible_evolution_gets_the_next_version() {
    let registry = RegistryStandIn::start().await;
    let client = client_for(&registry.url);
    assert_eq!(client.compatibility(SUBJECT).await.unwrap(), "BACKWARD");

    let v1 = client.register(SUBJECT, V1).await.unwrap();
    let v2 = client.register(SUBJECT, V2_NULLABLE_ADDED).await.unwrap();
    assert_ne!(v1, v2);
    assert_eq!(client.versions(SUBJECT).await.unwrap(), vec![1, 2]);
    assert!(same_json(
        &client.schema_by_id(v2).await.unwrap(),
        V2_NULLABLE_ADDED
    ));

    // Re-registering an older version neither checks nor adds a version.
    assert_eq!(
        client_for(&registry.url)
            .register(SUBJECT, V1)
            .await
            .unwrap(),
        v1
    );
    assert_eq!(client.versions(SUBJECT).await.unwrap(), vec![1, 2]);
}

#[tokio::test]
async fn incompatible_changes_are_rejected_with_the_registry_message() {
    let registry = RegistryStandIn::start().await;
    let client = client_for(&registry.url);
    client.register(SUBJECT, V1).await.unwrap();

    for (change, schema, reason) in [
        (
            "required field added",
            V2_REQUIRED_ADDED,
            "Field 'amount' in reader schema must have a default value",
        ),
        (
            "string became int",
            V2_STATUS_INT,
            "Field 'status' in reader schema does not match the type",
        ),
    ] {
        let err = client.register(SUBJECT, schema).await.unwrap_err();
        let RegistryError::Incompatible { subject, message } = &err else {
            panic!("{change}: expected Incompatible, got {err:?}");
        };
        assert_eq!(subject, SUBJECT);
        assert!(message.contains(reason), "{change}: {message}");
        assert!(!err.is_transient(), "{change}");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "registry rejected schema for subject \"shop.public.orders-value\" as incompatible (409): \
                 Schema being registered is incompatible with an earlier schema"
            ),
            "{change}: {text}"
        );
        assert!(text.contains(reason), "{change}: {text}");
    }
    assert_eq!(client.versions(SUBJECT).await.unwrap(), vec![1]);

    // With the check switched off the same change is accepted.
    client.set_compatibility(SUBJECT, "NONE").await.unwrap();
    assert_eq!(client.compatibility(SUBJECT).await.unwrap(), "NONE");
    client.register(SUBJECT, V2_STATUS_INT).await.unwrap();
    assert_eq!(client.versions(SUBJECT).await.unwrap(), vec![1, 2]);
}

#[tokio::test]
async fn forward_and_transitive_levels_check_the_right_versions() {
    let registry = RegistryStandIn::start().await;
    let client = client_for(&registry.url);

    // FORWARD: old readers must read new data. Adding a required field is fine
    // (old readers ignore it); dropping one without default is not.
    let subject = "forward-value";
    client.set_compatibility(subject, "FORWARD").await.unwrap();
    client.register(subject, V1).await.unwrap();
    client.register(subject, V2_REQUIRED_ADDED).await.unwrap();
    let dropped_status = r#"{"type":"record","name":"Value","namespace":"shop.public.orders","fields":[
        {"name":"id","type":"long"},{"name":"amount","type":"long"}]}"#;
    let err = client.register(subject, dropped_status).await.unwrap_err();
    assert!(matches!(err, RegistryError::Incompatible { .. }), "{err:?}");

    // BACKWARD checks the latest version only, BACKWARD_TRANSITIVE all of them.
    let without_status = r#"{"type":"record","name":"Value","namespace":"shop.public.orders","fields":[
        {"name":"id","type":"long"}]}"#;
    let status_int_default = r#"{"type":"record","name":"Value","namespace":"shop.public.orders","fields":[
        {"name":"id","type":"long"},{"name":"status","type":"int","default":0}]}"#;
    for (level, accepted) in [("BACKWARD_TRANSITIVE", false), ("BACKWARD", true)] {
        let subject = format!("transitive-{level}-value");
        client.register(&subject, V1).await.unwrap();
        client.register(&subject, without_status).await.unwrap();
        client.set_compatibility(&subject, level).await.unwrap();
        let result = client.register(&subject, status_int_default).await;
        assert_eq!(result.is_ok(), accepted, "{level}: {result:?}");
    }
}

#[tokio::test]
async fn invalid_schema_and_level_are_rejected_as_not_transient() {
    let registry = RegistryStandIn::start().await;
    let client = client_for(&registry.url);

    let err = client
        .register(SUBJECT, r#"{"type":"record","name":"V"}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::InvalidSchema {
                error_code: Some(42201),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(
        err.to_string().starts_with(
            "registry rejected schema for subject \"shop.public.orders-value\" as invalid (422): "
        ),
        "{err}"
    );

    let err = client
        .set_compatibility(SUBJECT, "SIDEWAYS")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::Rejected {
                status: 422,
                error_code: Some(42203),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());

    let err = client.versions("no-such-subject").await.unwrap_err();
    assert!(
        matches!(
            &err,
            RegistryError::NotFound {
                error_code: Some(40401),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn outage_is_transient_and_cached_ids_still_answer() {
    let registry = RegistryStandIn::start().await;
    let client = client_for(&registry.url);
    let id = client.register(SUBJECT, V1).await.unwrap();

    registry.set_unavailable(true);
    let err = client
        .register(SUBJECT, V2_NULLABLE_ADDED)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Unavailable { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    let err = client.schema_by_id(id).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    // Known schemas need no registry.
    assert_eq!(client.register(SUBJECT, V1).await.unwrap(), id);

    registry.set_unavailable(false);
    client.register(SUBJECT, V2_NULLABLE_ADDED).await.unwrap();
    assert_eq!(client.versions(SUBJECT).await.unwrap(), vec![1, 2]);
}

#[tokio::test]
async fn unreachable_and_silent_registries_are_transient() {
    let registry = RegistryStandIn::start().await;
    let url = registry.url.clone();
    registry.stop().await;
    let err = client_for(&url).register(SUBJECT, V1).await.unwrap_err();
    assert!(matches!(&err, RegistryError::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(
        err.to_string()
            .contains("subject \"shop.public.orders-value\""),
        "{err}"
    );

    // A registry that accepts the connection and never answers times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let (_socket, _) = silent.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    let client = RegistryClient::new(&RegistryClientConfig {
        url: format!("http://{addr}"),
        username: None,
        password: None,
        request_timeout_ms: 200,
        root_cert_file: None,
    })
    .unwrap();
    let err = client.schema_by_id(1).await.unwrap_err();
    let RegistryError::Transport { source, .. } = &err else {
        panic!("expected Transport, got {err:?}");
    };
    assert!(source.is_timeout(), "{source:?}");
    assert!(err.is_transient());
    held.abort();
}

#[tokio::test]
async fn stand_in_speaks_confluent_shapes() {
    let registry = RegistryStandIn::start().await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", registry.url);
    let body = |schema: &str| json!({ "schema": schema }).to_string();
    async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(
            response.headers()["content-type"],
            "application/vnd.schemaregistry.v1+json"
        );
        (
            status,
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
        )
    }

    let (status, reply) = send(
        http.post(url(&format!("/subjects/{SUBJECT}/versions")))
            .body(body(V1)),
    )
    .await;
    assert_eq!((status, &reply), (200, &json!({ "id": 1 })));
    send(
        http.post(url(&format!("/subjects/{SUBJECT}/versions")))
            .body(body(V2_NULLABLE_ADDED)),
    )
    .await;

    let (status, reply) = send(
        http.post(url(&format!("/subjects/{SUBJECT}")))
            .body(body(V1)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&reply["subject"], &reply["id"], &reply["version"]),
        (&json!(SUBJECT), &json!(1), &json!(1))
    );
    assert!(same_json(reply["schema"].as_str().unwrap(), V1));

    let (status, reply) = send(
        http.post(url(&format!("/subjects/{SUBJECT}")))
            .body(body(V2_STATUS_INT)),
    )
    .await;
    assert_eq!((status, &reply["error_code"]), (404, &json!(40403)));

    let (status, reply) =
        send(http.get(url(&format!("/subjects/{SUBJECT}/versions/latest")))).await;
    assert_eq!(
        (status, &reply["version"], &reply["id"]),
        (200, &json!(2), &json!(2))
    );
    let (status, reply) = send(http.get(url(&format!("/subjects/{SUBJECT}/versions/7")))).await;
    assert_eq!((status, &reply["error_code"]), (404, &json!(40402)));
    let (status, reply) = send(http.get(url(&format!("/subjects/{SUBJECT}/versions/zero")))).await;
    assert_eq!((status, &reply["error_code"]), (422, &json!(42202)));

    let (_, reply) = send(http.get(url("/subjects"))).await;
    assert_eq!(reply, json!([SUBJECT]));
    let (_, reply) = send(http.get(url("/schemas/ids/2"))).await;
    assert!(same_json(
        reply["schema"].as_str().unwrap(),
        V2_NULLABLE_ADDED
    ));

    let (_, reply) = send(http.get(url("/config"))).await;
    assert_eq!(reply, json!({ "compatibilityLevel": "BACKWARD" }));
    let (status, reply) = send(http.get(url(&format!("/config/{SUBJECT}")))).await;
    assert_eq!((status, &reply["error_code"]), (404, &json!(40408)));
    let (_, reply) = send(http.put(url("/config")).body(r#"{"compatibility":"full"}"#)).await;
    assert_eq!(reply, json!({ "compatibility": "FULL" }));
    let (_, reply) = send(http.get(url(&format!("/config/{SUBJECT}?defaultToGlobal=true")))).await;
    assert_eq!(reply, json!({ "compatibilityLevel": "FULL" }));

    let check = |version: &str| {
        url(&format!(
            "/compatibility/subjects/{SUBJECT}/versions/{version}"
        ))
    };
    let (_, reply) = send(http.post(check("latest")).body(body(V2_NULLABLE_ADDED))).await;
    assert_eq!(reply, json!({ "is_compatible": true }));
    let (_, reply) = send(http.post(check("latest")).body(body(V2_STATUS_INT))).await;
    assert_eq!(reply, json!({ "is_compatible": false }));
    let (_, reply) = send(
        http.post(format!("{}?verbose=true", check("1")))
            .body(body(V2_STATUS_INT)),
    )
    .await;
    assert_eq!(reply["is_compatible"], json!(false));
    assert!(!reply["messages"].as_array().unwrap().is_empty(), "{reply}");

    let (status, reply) = send(
        http.post(url("/subjects/x/versions"))
            .body(body("{not json")),
    )
    .await;
    assert_eq!((status, &reply["error_code"]), (422, &json!(42201)));
    let (status, reply) = send(http.get(url("/no/such/endpoint"))).await;
    assert_eq!((status, &reply["error_code"]), (404, &json!(404)));

    let (_, reply) = send(http.delete(url(&format!("/subjects/{SUBJECT}")))).await;
    assert_eq!(reply, json!([1, 2]));
    let (status, reply) = send(http.get(url(&format!("/subjects/{SUBJECT}/versions")))).await;
    assert_eq!((status, &reply["error_code"]), (404, &json!(40401)));

    registry.set_unavailable(true);
    let (status, reply) = send(http.get(url("/subjects"))).await;
    assert_eq!((status, &reply["error_code"]), (503, &json!(50003)));
}

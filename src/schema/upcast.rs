//! Older canonical versions and the pure steps that bring them to the current one.
//!
//! | version | differs from the next |
//! |---|---|
//! | 1.0 | `queueId`, `queueName`, `wrapUpCode`, `disposition` directly on `interaction`; participants carry `role`, not `type`; no `direction` |
//! | 2.0 | no `interaction.direction` |
//! | 2.1.0 | current |
//!
//! An event declares its version in `interaction.schemaVersion`; without one it is
//! recognised by shape (flat routing fields or participant `role` mean 1.0, else 2.0, whose
//! upcast to 2.1.0 only adds `direction: null`).

use serde_json::{Map, Value};

/// Every version the registry knows, oldest first; the last is current.
pub const VERSIONS: &[&str] = &["1.0", "2.0", "2.1.0"];

/// The version an event declares, or the one its shape shows.
pub fn detect(e: &Value) -> Option<String> {
    let i = e.get("interaction")?.as_object()?;
    if let Some(v) = i.get("schemaVersion") {
        return v.as_str().map(str::to_string);
    }
    let flat = ["queueId", "queueName", "wrapUpCode", "disposition"]
        .iter()
        .any(|k| i.contains_key(*k));
    let role = i
        .get("participants")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p.get("role").is_some()));
    Some(if flat || role { "1.0" } else { "2.0" }.to_string())
}

/// 1.0 -> 2.0: routing fields move into `routingMetadata`; `role` becomes `type`.
pub fn v1_0_to_v2_0(mut e: Value) -> Value {
    if let Some(i) = e.get_mut("interaction").and_then(Value::as_object_mut) {
        let mut routing = Map::new();
        for k in ["queueId", "queueName", "wrapUpCode", "disposition"] {
            if let Some(v) = i.remove(k) {
                routing.insert(k.to_string(), v);
            }
        }
        i.insert("routingMetadata".into(), Value::Object(routing));
        if let Some(ps) = i.get_mut("participants").and_then(Value::as_array_mut) {
            for p in ps.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(role) = p.remove("role") {
                    p.insert("type".into(), role);
                }
            }
        }
        i.insert("schemaVersion".into(), "2.0".into());
    }
    e
}

/// 2.0 -> 2.1.0: `direction` is added as unknown (null).
pub fn v2_0_to_v2_1_0(mut e: Value) -> Value {
    if let Some(i) = e.get_mut("interaction").and_then(Value::as_object_mut) {
        i.entry("direction").or_insert(Value::Null);
        i.insert("schemaVersion".into(), "2.1.0".into());
    }
    e
}

/// Applies every step from `from` to the current version (identity for the current one).
pub fn to_current(mut e: Value, from: &str) -> Value {
    let Some(start) = VERSIONS.iter().position(|v| *v == from) else {
        return e;
    };
    for v in &VERSIONS[start..VERSIONS.len() - 1] {
        e = match *v {
            "1.0" => v1_0_to_v2_0(e),
            "2.0" => v2_0_to_v2_1_0(e),
            _ => e,
        };
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn opt_str() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            "[A-Za-z0-9 _-]{0,20}".prop_map(Value::from)
        ]
    }

    fn participant(field: &'static str) -> impl Strategy<Value = Value> {
        ("[a-z0-9-]{1,12}", prop_oneof![Just("CUSTOMER"), Just("AGENT"), Just("SUPERVISOR")], proptest::option::of("[+0-9a-z@.]{3,20}")).prop_map(move |(id, t, addr)| {
            let mut p = json!({"participantId": id, field: t, "joinedTimestamp": "2024-05-14T09:23:05.100Z"});
            if let Some(a) = addr {
                p["address"] = json!(a);
            }
            p
        })
    }

    fn envelope(interaction: Value) -> Value {
        json!({"eventId": "e-1", "eventType": "INTERACTION", "state": "UPDATED", "sourcePlatform": "NICE_CXONE",
               "tenantId": "t-1", "occurredAt": "2024-05-14T09:24:45Z", "interaction": interaction})
    }

    fn v1() -> impl Strategy<Value = Value> {
        (opt_str(), opt_str(), opt_str(), opt_str(), proptest::collection::vec(participant("role"), 0..4), any::<bool>(), prop_oneof![Just("CALL"), Just("CHAT"), Just("SMS"), Just("EMAIL")]).prop_map(
            |(q, qn, w, d, ps, declared, t)| {
                let mut i = json!({"interactionId": "i-1", "interactionType": t, "queueId": q, "queueName": qn, "wrapUpCode": w, "disposition": d, "participants": ps, "notes": "kept"});
                if declared {
                    i["schemaVersion"] = json!("1.0");
                }
                envelope(i)
            },
        )
    }

    fn v2_1_0() -> impl Strategy<Value = Value> {
        (opt_str(), opt_str(), proptest::collection::vec(participant("type"), 0..4), prop_oneof![Just(Value::Null), Just(json!("INBOUND")), Just(json!("OUTBOUND"))]).prop_map(|(q, w, ps, dir)| {
            envelope(json!({"schemaVersion": "2.1.0", "interactionId": "i-1", "interactionType": "CALL", "direction": dir,
                            "routingMetadata": {"queueId": q, "wrapUpCode": w}, "participants": ps, "vendor": {"x": [1, 2]}}))
        })
    }

    proptest! {
        /// Every valid 1.0 event upcasts to a valid 2.1.0 event that keeps what it had.
        #[test]
        fn upcast_is_total_on_valid_old_records(e in v1()) {
            let v = crate::schema::validator();
            let detected = detect(&e);
            prop_assert_eq!(detected.as_deref(), Some("1.0"));
            prop_assert!(v.is_valid_as("1.0", &e));
            let up = to_current(e.clone(), "1.0");
            prop_assert!(v.is_valid_as("2.1.0", &up), "{}", up);
            prop_assert_eq!(&up["interaction"]["routingMetadata"]["queueId"], &e["interaction"]["queueId"]);
            prop_assert_eq!(&up["interaction"]["notes"], &json!("kept"));
            let roles: Vec<&Value> = e["interaction"]["participants"].as_array().unwrap().iter().map(|p| &p["role"]).collect();
            let types: Vec<&Value> = up["interaction"]["participants"].as_array().unwrap().iter().map(|p| &p["type"]).collect();
            prop_assert_eq!(roles, types);
        }

        /// Upcasting is the identity on current records.
        #[test]
        fn upcast_is_identity_on_current(e in v2_1_0()) {
            prop_assert!(crate::schema::validator().is_valid_as("2.1.0", &e));
            prop_assert_eq!(to_current(e.clone(), "2.1.0"), e);
        }
    }

    #[test]
    fn v2_0_gains_an_unknown_direction() {
        let e = envelope(
            json!({"schemaVersion": "2.0", "interactionId": "i", "interactionType": "SMS", "routingMetadata": {"queueId": "q"}, "participants": []}),
        );
        assert!(crate::schema::validator().is_valid_as("2.0", &e));
        let up = to_current(e, "2.0");
        assert_eq!(up["interaction"]["direction"], Value::Null);
        assert_eq!(up["interaction"]["schemaVersion"], "2.1.0");
    }
}

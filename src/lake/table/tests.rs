use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

#[test]
fn time_statistics_round_outwards_to_milliseconds() {
    let at = t("2025-10-01T00:00:04.786123Z");
    assert_eq!(stat_time(at, false), "2025-10-01T00:00:04.786Z");
    assert_eq!(stat_time(at, true), "2025-10-01T00:00:04.787Z");
    let exact = t("2025-10-01T00:00:04.786Z");
    assert_eq!(stat_time(exact, true), "2025-10-01T00:00:04.786Z");
}

#[test]
fn the_schema_names_every_column_and_the_partition_keys() {
    let s: Value = serde_json::from_str(&schema_string()).unwrap();
    let names: Vec<&str> = s["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), SCHEMA.fields().len() + 4);
    assert_eq!(&names[names.len() - 4..], PARTITION_COLUMNS);
    let agents = s["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "agent_ids")
        .unwrap();
    assert_eq!(agents["type"]["elementType"], "string");
}

#[test]
fn log_paths_round_trip() {
    let p = TableLogPath::new(42).to_path();
    assert_eq!(p.as_ref(), "_delta_log/00000000000000000042.json");
    assert_eq!(TableLogPath::parse(&p), Some(TableLogPath::new(42)));
    let other = layout::TableLogPath::new(1).to_path();
    assert!(TableLogPath::parse(&other).is_some());
}

//! Generators of canonical event lines for the fast path's tests: a JSON tree that can hold
//! what a `Value` cannot (duplicate keys, escapes, numbers out of range), valid events, and
//! edits that break them.

use proptest::prelude::*;
use std::fmt::Write as _;

/// One of the `|`-separated strings of `list`.
pub(super) fn pick(list: &'static str) -> impl Strategy<Value = &'static str> + Clone {
    prop::sample::select(list.split('|').collect::<Vec<_>>())
}

/// A JSON text as a tree, so a line can carry what a `Value` cannot: duplicate keys, escapes,
/// numbers out of `f64`'s range.
#[derive(Clone, Debug)]
pub(super) enum J {
    /// Written as is (numbers, literals, broken strings).
    Raw(&'static str),
    S(String),
    A(Vec<J>),
    O(Vec<(String, J)>),
}

/// How a tree is written: 0 plain, 1 non-ASCII as `\u` escapes, 2 every letter too.
#[derive(Clone, Copy, Debug)]
pub(super) struct Style {
    escape: u8,
    spaces: bool,
    rotate: usize,
}

pub(super) fn write_str(s: &str, style: Style, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let escaped = match style.escape {
            1 => !c.is_ascii(),
            2 => !c.is_ascii() || c.is_ascii_alphabetic(),
            _ => false,
        };
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || escaped => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(out, "\\u{u:04x}").unwrap();
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(super) fn render(j: &J, style: Style, out: &mut String) {
    let sep = if style.spaces { ", " } else { "," };
    match j {
        J::Raw(r) => out.push_str(r),
        J::S(s) => write_str(s, style, out),
        J::A(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push_str(sep);
                }
                render(item, style, out);
            }
            out.push(']');
        }
        J::O(entries) => {
            out.push('{');
            let len = entries.len().max(1);
            for n in 0..entries.len() {
                let (k, v) = &entries[(n + style.rotate) % len];
                if n > 0 {
                    out.push_str(sep);
                }
                write_str(k, style, out);
                out.push_str(if style.spaces { ": " } else { ":" });
                render(v, style, out);
            }
            out.push('}');
        }
    }
}

pub(super) fn s(v: &str) -> J {
    J::S(v.to_string())
}

/// Strings that sit on or beside a rule of the schema, for any field.
pub(super) fn edge_string() -> impl Strategy<Value = J> {
    pick(concat!(
        " |\t|x y|INTERACTION|interaction|CREATED|UPDATED|COMPLETED|created|",
        "DELETED|CREATED |GENESYS_CX|a.b:c-d|has space|ÄB|CALL|VIDEO|call|1CALL|",
        "CALL\n|C_1|AGENT|agent|INBOUND|2.1.0|2.1|2.0|1.0|0.9|2.1.0 |",
        "2024-05-14T09:24:45Z|2024-05-14T09:24:45.8Z|",
        "2024-05-14T09:24:45.123456789Z|2024-05-14T09:24:45.1234567890Z|",
        "2024-05-14T09:24:45+05:30|2024-05-14T09:24:45-00:00|",
        "2024-05-14t09:24:45z|2024-05-14 09:24:45Z|2024-13-14T09:24:45Z|",
        "2024-02-30T00:00:00Z|2024-05-14T24:00:00Z|2024-05-14T23:59:60Z|",
        "2024-05-14T09:24:45Z\n|2024-05-14T09:24:45.Z|2024-05-14T09:24:45+0530|",
        "2024-05-14T09:24:45+99:99|2024-05-14T09:24:45|１２３４-05-14T09:24:45Z|",
        "+15550198765|q\"uote\\back"
    ))
    .prop_map(s)
}

/// Strings of every length class the schema draws a line through (64, 256, 1024 code points,
/// in one-, two- and four-byte characters).
pub(super) fn long_string() -> impl Strategy<Value = J> {
    (
        pick("a|é|😀|Z"),
        prop::sample::select(vec![31, 32, 33, 64, 65, 256, 257, 1024, 1025]),
    )
        .prop_map(|(c, n)| J::S(c.repeat(n)))
}

/// Values of every other type, including numbers a `Value` cannot hold and broken strings.
pub(super) fn wrong_type() -> impl Strategy<Value = J> {
    prop_oneof![
        pick(concat!(
            "null|true|false|0|-1|1.5|-0|1E+2|1e400|-1e400|",
            "123456789012345678901234567890|[]|{}|[\"CALL\"]|{\"a\":1}|\"\\ud800\"|",
            "\"\\udc00x\"|\"\\ud83d\\ude00\"|\"\\u0041\"|\"bad\\q\"|01|1.|NaN"
        ))
        .prop_map(J::Raw),
        Just(J::A(vec![s("CALL")])),
        Just(J::O(vec![("x".into(), J::Raw("1"))])),
    ]
}

pub(super) fn any_string() -> impl Strategy<Value = J> {
    prop_oneof![
        4 => "[a-z0-9-]{1,40}".prop_map(J::S),
        2 => "\\PC{1,12}".prop_map(J::S),
        1 => edge_string(),
        1 => long_string(),
    ]
}

pub(super) fn timestamp() -> impl Strategy<Value = J> {
    (
        2000u32..2100,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        pick("|.8|.123|.123456789"),
        pick("Z|+05:30|-08:00|+00:00"),
    )
        .prop_map(|(y, mo, d, h, mi, frac, zone)| {
            J::S(format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:17{frac}{zone}"
            ))
        })
}

pub(super) fn nullable(inner: BoxedStrategy<J>) -> impl Strategy<Value = Option<J>> {
    prop_oneof![3 => inner.prop_map(Some), 1 => Just(Some(J::Raw("null"))), 1 => Just(None)]
}

pub(super) fn participant() -> impl Strategy<Value = J> {
    let kind = pick("AGENT|CUSTOMER|IVR|agent|Agent").prop_map(s);
    let address = prop_oneof![any_string(), Just(s("")), Just(s("  "))].boxed();
    (
        any_string(),
        kind,
        nullable(address),
        nullable(timestamp().boxed()),
        nullable(timestamp().boxed()),
    )
        .prop_map(|(id, kind, address, joined, left)| {
            let mut p = vec![("participantId".to_string(), id), ("type".into(), kind)];
            for (k, v) in [
                ("address", address),
                ("joinedTimestamp", joined),
                ("leftTimestamp", left),
            ] {
                if let Some(v) = v {
                    p.push((k.into(), v));
                }
            }
            J::O(p)
        })
}

/// A valid event of the current version (most of the time: the strings of `any_string` may
/// break a rule on their own).
pub(super) fn event() -> impl Strategy<Value = J> {
    let upper = pick("CALL|CHAT|SMS|EMAIL|VIDEO|X_1").prop_map(s);
    let routing = (
        nullable(any_string().boxed()),
        nullable(any_string().boxed()),
        nullable(any_string().boxed()),
        nullable(any_string().boxed()),
    )
        .prop_map(|(q, n, w, d)| {
            let names = ["queueId", "queueName", "wrapUpCode", "disposition"];
            let entries = names
                .into_iter()
                .zip([q, n, w, d])
                .filter_map(|(k, v)| Some((k.to_string(), v?)));
            J::O(entries.collect())
        });
    let interaction = (
        any_string(),
        upper,
        nullable(pick("INBOUND|OUTBOUND").prop_map(s).boxed()),
        nullable(routing.boxed()),
        prop::collection::vec(participant(), 0..4),
    )
        .prop_map(|(id, kind, direction, routing, ps)| {
            let mut i = vec![
                ("schemaVersion".to_string(), s("2.1.0")),
                ("interactionId".into(), id),
                ("interactionType".into(), kind),
                ("participants".into(), J::A(ps)),
                ("notes".into(), s("kept, not indexed")),
            ];
            i.extend(direction.map(|d| ("direction".to_string(), d)));
            i.extend(routing.map(|r| ("routingMetadata".to_string(), r)));
            J::O(i)
        });
    let state = pick("CREATED|UPDATED|COMPLETED").prop_map(s);
    let platform = pick("GENESYS_CX|NICE_CXONE|a.b:c-d").prop_map(s);
    (
        any_string(),
        state,
        platform,
        any_string(),
        prop_oneof![6 => timestamp(), 1 => edge_timestamp()],
        interaction,
    )
        .prop_map(|(event_id, state, platform, tenant, at, interaction)| {
            J::O(vec![
                ("eventId".into(), event_id),
                ("eventType".into(), s("INTERACTION")),
                ("state".into(), state),
                ("sourcePlatform".into(), platform),
                ("tenantId".into(), tenant),
                ("occurredAt".into(), at),
                ("interaction".into(), interaction),
            ])
        })
}

/// Times on and beside the timestamp pattern and beside what chrono takes (month 13, day 31
/// of February, hour 24, second 60, ten fraction digits, odd zones and separators).
pub(super) fn edge_timestamp() -> impl Strategy<Value = J> {
    (
        (
            pick("2024|2023|0000|9999|１２３４|202"),
            pick("01|02|12|13|00|1"),
            pick("01|28|29|30|31|32|00"),
            pick("T|T|t| "),
        ),
        (
            pick("00|23|24"),
            pick("00|59|60"),
            pick("00|59|60|61"),
            0usize..12,
            pick("Z|Z|z|+05:30|-00:00|+0530|+99:99|+24:00||Z\n| Z"),
        ),
    )
        .prop_map(|((y, mo, d, t), (h, mi, sec, frac, zone))| {
            let frac = match frac {
                0 => String::new(),
                11 => ".".into(),
                n => format!(
                    ".{}",
                    "1234567890".chars().cycle().take(n).collect::<String>()
                ),
            };
            J::S(format!("{y}-{mo}-{d}{t}{h}:{mi}:{sec}{frac}{zone}"))
        })
}

/// Keys of each object (depth 0 the event, 1 its interaction, 2 its routing, 3 its first
/// participant), the ones the schema names and a few it does not.
pub(super) const KEYS: [&[&str]; 4] = [
    &[
        "eventId",
        "eventType",
        "state",
        "sourcePlatform",
        "tenantId",
        "occurredAt",
        "interaction",
        "notes",
    ],
    &[
        "schemaVersion",
        "interactionId",
        "interactionType",
        "direction",
        "routingMetadata",
        "participants",
        "notes",
    ],
    &["queueId", "queueName", "wrapUpCode", "disposition", "notes"],
    &[
        "participantId",
        "type",
        "address",
        "joinedTimestamp",
        "leftTimestamp",
        "role",
        "notes",
    ],
];

/// Key pairs by which `auto` would see a vendor shape.
pub(super) const VENDOR_PAIRS: &[(&str, &str)] = &[
    ("detail-type", "detail"),
    ("conversationId", "participants"),
    ("contactId", "mediaType"),
    ("ContactId", "Channel"),
    ("conversations", "x"),
    ("completedContacts", "x"),
    ("contactId", "x"),
];

/// One edit to the object at a depth: drop a key, set a key (replacing its value or adding it),
/// add a key and value of any name (a duplicate, maybe), or add a vendor shape's keys.
#[derive(Clone, Debug)]
pub(super) enum Edit {
    Remove(usize, usize),
    Set(usize, &'static str, J),
    Add(usize, String, J),
    Vendor(usize, J),
}

pub(super) fn edit() -> impl Strategy<Value = Edit> {
    let any_key = prop_oneof![
        pick(concat!(
            "notes|vendorExtra||é|eventId|interaction|schemaVersion|type|address|",
            "queueId|direction|state"
        ))
        .prop_map(str::to_string),
        "\\PC{1,8}",
    ];
    let value = prop_oneof![
        3 => edge_timestamp(),
        2 => edge_string(),
        1 => long_string(),
        2 => wrong_type(),
        1 => any_string(),
    ];
    let key = (0usize..4, any::<prop::sample::Index>())
        .prop_map(|(depth, n)| (depth, *n.get(KEYS[depth])));
    prop_oneof![
        1 => (0usize..4, 0usize..8).prop_map(|(d, n)| Edit::Remove(d, n)),
        4 => (key, value.clone()).prop_map(|((d, k), v)| Edit::Set(d, k, v)),
        1 => (0usize..4, any_key, prop_oneof![value, participant()])
            .prop_map(|(d, k, v)| Edit::Add(d, k, v)),
        1 => (0..VENDOR_PAIRS.len(), prop_oneof![Just(J::A(vec![])), Just(J::Raw("1")), Just(s("x"))])
            .prop_map(|(n, v)| Edit::Vendor(n, v)),
    ]
}

pub(super) fn object_at(event: &mut J, depth: usize) -> Option<&mut Vec<(String, J)>> {
    let J::O(top) = event else { return None };
    if depth == 0 {
        return Some(top);
    }
    let (_, J::O(i)) = top.iter_mut().find(|(k, _)| k == "interaction")? else {
        return None;
    };
    let target = match depth {
        1 => return Some(i),
        2 => &mut i.iter_mut().find(|(k, _)| k == "routingMetadata")?.1,
        _ => match &mut i.iter_mut().find(|(k, _)| k == "participants")?.1 {
            J::A(ps) => ps.first_mut()?,
            _ => return None,
        },
    };
    match target {
        J::O(o) => Some(o),
        _ => None,
    }
}

pub(super) fn set(o: &mut Vec<(String, J)>, key: &str, value: J) {
    match o.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => o.push((key.to_string(), value)),
    }
}

pub(super) fn apply(event: &mut J, edit: &Edit) {
    let depth = match edit {
        Edit::Remove(d, _) | Edit::Set(d, ..) | Edit::Add(d, ..) => *d,
        Edit::Vendor(..) => 0,
    };
    let Some(o) = object_at(event, depth) else {
        return;
    };
    match edit {
        Edit::Remove(_, n) if !o.is_empty() => {
            o.remove(n % o.len());
        }
        Edit::Set(_, k, v) => set(o, k, v.clone()),
        Edit::Add(_, k, v) => o.push((k.clone(), v.clone())),
        Edit::Vendor(n, v) => {
            let (a, b) = VENDOR_PAIRS[*n];
            set(o, a, v.clone());
            set(o, b, v.clone());
        }
        Edit::Remove(..) => {}
    }
}

pub(super) fn line_of(event: &J, style: Style) -> Vec<u8> {
    let mut out = String::new();
    render(event, style, &mut out);
    out.into_bytes()
}

pub(super) fn style() -> impl Strategy<Value = Style> {
    (0u8..3, any::<bool>(), 0usize..8).prop_map(|(escape, spaces, rotate)| Style {
        escape,
        spaces,
        rotate,
    })
}

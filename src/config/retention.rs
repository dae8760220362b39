//! The retention policy table: periods (presets and custom), rules, the store's retention
//! floor, and the checks that keep expiry arithmetic bounded. Pure: no I/O.

use chrono::{DateTime, Months, NaiveDate, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The longest period a policy may have: 100 years.
pub const MAX_YEARS: u32 = 100;
/// 100 calendar years are at most this many days long.
const MAX_SPAN_DAYS: i64 = 36_525;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default = "default_policy")]
    pub default_policy: String,
    /// First matching rule wins; a rule with no tenants / types matches all of them.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Custom policies, beside the presets FINRA_4511_6Y, SEC_17A4_6Y and MIFID2_5Y.
    #[serde(default)]
    pub policies: BTreeMap<String, Period>,
    /// Command run when a sweep is refused by a storage lock; the report arrives as JSON on
    /// its standard input (e.g. a script that posts to a webhook or pages someone).
    #[serde(default)]
    pub notify_command: Option<Vec<String>>,
    /// A file mixing expired records with unexpired ones is rewritten (survivors to a new
    /// file) only when its last record expires at least this many days after the sweep;
    /// closer than that it waits and goes whole. 0: always rewrite.
    #[serde(default = "default_rewrite_min_days")]
    pub rewrite_min_days: u32,
}

fn default_rewrite_min_days() -> u32 {
    7
}

fn default_policy() -> String {
    "FINRA_4511_6Y".into()
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            default_policy: default_policy(),
            rules: Vec::new(),
            policies: BTreeMap::new(),
            notify_command: None,
            rewrite_min_days: default_rewrite_min_days(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub interaction_types: Vec<String>,
    pub policy: String,
}

/// A retention period, added to `occurredAt` in calendar terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Period {
    #[serde(default)]
    pub years: u32,
    #[serde(default)]
    pub months: u32,
    #[serde(default)]
    pub days: u32,
}

impl Period {
    /// `from` plus the period; `None` when the arithmetic overflows (never a wrap, never a
    /// panic).
    pub fn expiry(self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let months = self.years.checked_mul(12)?.checked_add(self.months)?;
        from.checked_add_months(Months::new(months))?
            .checked_add_signed(chrono::Duration::try_days(self.days.into())?)
    }

    /// The shortest and longest the period can be, in days, over every start date (the
    /// Gregorian calendar repeats every 400 years; within a month the span is longest from
    /// the 1st and shortest from the last day, which month-end clamping shortens).
    /// `None` when it cannot be computed (overflow).
    pub fn span_days(self) -> Option<(i64, i64)> {
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for year in 2000..2400 {
            for month in 1..=12u32 {
                let first = NaiveDate::from_ymd_opt(year, month, 1)?;
                let last = first.checked_add_months(Months::new(1))?.pred_opt()?;
                for day in [first, last] {
                    let start = day.and_hms_opt(0, 0, 0)?.and_utc();
                    let span = (self.expiry(start)? - start).num_days();
                    lo = lo.min(span);
                    hi = hi.max(span);
                }
            }
        }
        Some((lo, hi))
    }

    /// Problems with the period of policy `name`: zero, or longer than [`MAX_YEARS`].
    fn problems(self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self == Period::default() {
            out.push(format!(
                "retention.policies.{name}: a period of zero keeps nothing"
            ));
            return out;
        }
        let too_long = format!(
            "retention.policies.{name}: years = {}, months = {}, days = {} is longer than {MAX_YEARS} years, the longest period a policy may have",
            self.years, self.months, self.days
        );
        let fields_fit = self.years <= MAX_YEARS
            && self.months <= MAX_YEARS * 12
            && i64::from(self.days) <= MAX_SPAN_DAYS;
        match self.span_days() {
            Some((_, hi)) if fields_fit && hi <= MAX_SPAN_DAYS => {}
            _ => out.push(too_long),
        }
        out
    }

    fn describe(self) -> String {
        format!(
            "{} years {} months {} days",
            self.years, self.months, self.days
        )
    }
}

/// The store's minimum retention, recorded in the store marker at `init` and never lowered:
/// no pipeline may keep a record for less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionFloor {
    pub days: u32,
}

impl RetentionFloor {
    /// FINRA Rule 4511's 6 years, as days: the shortest six calendar years can be.
    pub const DEFAULT_DAYS: u32 = 2190;

    /// A floor given at `init`: at least one day, at most [`MAX_YEARS`] years.
    pub fn new(days: u32) -> Result<Self, String> {
        if days == 0 || i64::from(days) > MAX_SPAN_DAYS {
            return Err(format!(
                "a retention floor of {days} days: it must be 1 to {MAX_SPAN_DAYS} days"
            ));
        }
        Ok(RetentionFloor { days })
    }

    /// Whether a record from `occurred_at` would already be past the floor at `at`.
    pub fn passed(self, occurred_at: DateTime<Utc>, at: DateTime<Utc>) -> bool {
        occurred_at
            .checked_add_signed(chrono::Duration::days(self.days.into()))
            .is_some_and(|end| end <= at)
    }

    fn check(self, id: &str, period: Period) -> Option<String> {
        let shortest = period.span_days().map_or(0, |(lo, _)| lo);
        (shortest < i64::from(self.days)).then(|| {
            format!(
                "retention policy {id} ({}, as short as {shortest} days) is shorter than this store's retention floor of {} days (set at `holdfast init`, never lowered)",
                period.describe(),
                self.days
            )
        })
    }
}

impl Default for RetentionFloor {
    fn default() -> Self {
        RetentionFloor {
            days: Self::DEFAULT_DAYS,
        }
    }
}

pub const PRESETS: &[(&str, Period, &str)] = &[
    (
        "FINRA_4511_6Y",
        Period {
            years: 6,
            months: 0,
            days: 0,
        },
        "FINRA Rule 4511: 6 years where no other period applies",
    ),
    (
        "SEC_17A4_6Y",
        Period {
            years: 6,
            months: 0,
            days: 0,
        },
        "SEC Rule 17a-4: 6 years for the records it names",
    ),
    (
        "MIFID2_5Y",
        Period {
            years: 5,
            months: 0,
            days: 0,
        },
        "MiFID II art. 16(7): 5 years (up to 7 on the authority's request)",
    ),
];

type Rule = (Vec<String>, Vec<String>, Arc<str>);

/// The validated policy table: which policy a record gets and when it expires.
#[derive(Debug, Clone)]
pub struct Policies {
    periods: BTreeMap<Arc<str>, Period>,
    rules: Vec<Rule>,
    default: Arc<str>,
}

impl Default for Policies {
    fn default() -> Self {
        RetentionConfig::default()
            .validate(None)
            .expect("defaults are valid")
    }
}

impl RetentionConfig {
    /// The policy table, or every problem with it. With a `floor`, the policies this table
    /// defines or uses must keep records at least that long.
    pub fn validate(&self, floor: Option<RetentionFloor>) -> Result<Policies, Vec<String>> {
        let mut problems = Vec::new();
        let mut periods: BTreeMap<Arc<str>, Period> = PRESETS
            .iter()
            .map(|(n, p, _)| (Arc::from(*n), *p))
            .collect();
        for (name, p) in &self.policies {
            if PRESETS.iter().any(|(n, ..)| n == name) {
                problems.push(format!(
                    "retention.policies.{name}: a preset cannot be redefined"
                ));
            }
            problems.extend(p.problems(name));
            if name.is_empty()
                || name.len() > 48
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                problems.push(format!("retention.policies.{name}: ids are 1 to 48 letters, digits and _ (they name data files)"));
            }
            periods.insert(Arc::from(name.as_str()), *p);
        }
        let known = |id: &str| periods.keys().find(|k| k.as_ref() == id).cloned();
        let default = known(&self.default_policy).unwrap_or_else(|| {
            problems.push(format!(
                "retention.default_policy: unknown policy {}",
                self.default_policy
            ));
            Arc::from("")
        });
        let mut rules = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            match known(&r.policy) {
                Some(p) => rules.push((r.tenants.clone(), r.interaction_types.clone(), p)),
                None => problems.push(format!("retention.rules[{i}]: unknown policy {}", r.policy)),
            }
            for t in &r.interaction_types {
                if !crate::lake::layout::valid_type(t) {
                    problems.push(format!(
                        "retention.rules[{i}]: {t:?} is not an interaction type"
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let policies = Policies {
            periods,
            rules,
            default,
        };
        if let Some(floor) = floor {
            let custom = self.policies.keys().map(String::as_str);
            problems.extend(policies.below_floor_of(floor, custom));
        }
        if problems.is_empty() {
            Ok(policies)
        } else {
            Err(problems)
        }
    }
}

impl Policies {
    /// Which policy a (tenant, type) gets under this table, and why.
    pub fn explain(&self, tenant: &str, interaction_type: &str) -> (Arc<str>, Period, String) {
        let found = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, (tenants, types, _))| {
                (tenants.is_empty() || tenants.iter().any(|t| t == tenant))
                    && (types.is_empty() || types.iter().any(|t| t == interaction_type))
            });
        let list = |v: &[String]| {
            if v.is_empty() {
                "any".to_string()
            } else {
                v.join(", ")
            }
        };
        let (id, why) = match found {
            Some((i, (tenants, types, p))) => (
                p.clone(),
                format!(
                    "retention.rules[{i}] matches first (tenants {}, interaction types {})",
                    list(tenants),
                    list(types)
                ),
            ),
            None => (
                self.default.clone(),
                "no rule matches: the default policy".to_string(),
            ),
        };
        let period = self.periods[&id];
        (id, period, why)
    }

    /// The policy for a record and its expiry (`None`: the expiry cannot be computed).
    pub fn apply(
        &self,
        tenant: &str,
        interaction_type: &str,
        occurred_at: DateTime<Utc>,
    ) -> (Arc<str>, Option<DateTime<Utc>>) {
        let id = self
            .rules
            .iter()
            .find(|(tenants, types, _)| {
                (tenants.is_empty() || tenants.iter().any(|t| t == tenant))
                    && (types.is_empty() || types.iter().any(|t| t == interaction_type))
            })
            .map(|(_, _, p)| p)
            .unwrap_or(&self.default)
            .clone();
        let period = self.periods[&id];
        (id, period.expiry(occurred_at))
    }

    /// The policies this table gives records (the default and the rules') that keep them for
    /// less than `floor`, each as a message naming the policy.
    pub fn below_floor(&self, floor: RetentionFloor) -> Vec<String> {
        self.below_floor_of(floor, std::iter::empty())
    }

    fn below_floor_of<'a>(
        &'a self,
        floor: RetentionFloor,
        also: impl Iterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut used: Vec<&str> = std::iter::once(self.default.as_ref())
            .chain(self.rules.iter().map(|r| r.2.as_ref()))
            .chain(also)
            .collect();
        used.sort_unstable();
        used.dedup();
        used.into_iter()
            .filter_map(|id| floor.check(id, self.periods[id]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn period(years: u32, months: u32, days: u32) -> Period {
        Period {
            years,
            months,
            days,
        }
    }

    #[test]
    fn expiry_never_wraps() {
        let t = at("2024-01-01T00:00:00Z");
        // 357913942 * 12 wraps a u32 to 8 months: now an overflow, not a short expiry
        assert_eq!(period(357_913_942, 0, 0).expiry(t), None);
        assert_eq!(period(0, u32::MAX, 0).expiry(t), None);
        assert_eq!(period(6, 0, 0).expiry(t), Some(at("2030-01-01T00:00:00Z")));
        assert_eq!(
            period(0, 0, 1).expiry(DateTime::<Utc>::MAX_UTC),
            None,
            "past the end of time is an overflow"
        );
    }

    #[test]
    fn spans_are_calendar_exact() {
        assert_eq!(period(6, 0, 0).span_days(), Some((2190, 2192)));
        assert_eq!(period(5, 0, 0).span_days(), Some((1825, 1827)));
        assert_eq!(period(0, 1, 0).span_days(), Some((28, 31)));
        assert_eq!(period(100, 0, 0).span_days().unwrap().1, 36_525);
    }

    #[test]
    fn huge_and_zero_periods_are_refused_by_name() {
        let mut c = RetentionConfig::default();
        c.policies.insert("WRAP".into(), period(357_913_942, 0, 0));
        c.policies.insert("LONG".into(), period(100, 0, 1));
        c.policies.insert("OK".into(), period(100, 0, 0));
        c.policies.insert("NONE".into(), Period::default());
        let problems = c.validate(None).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("WRAP") && p.contains("100 years"))
        );
        assert!(problems.iter().any(|p| p.contains("LONG")));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("NONE") && p.contains("zero"))
        );
    }

    #[test]
    fn the_floor_refuses_shorter_policies_in_use() {
        let floor = RetentionFloor::default();
        assert!(RetentionConfig::default().validate(Some(floor)).is_ok());
        let mut c = RetentionConfig::default();
        c.policies.insert("ONE_DAY".into(), period(0, 0, 1));
        let problems = c.validate(Some(floor)).unwrap_err();
        assert!(
            problems[0].contains("ONE_DAY") && problems[0].contains("2190 days"),
            "{problems:?}"
        );
        assert!(c.validate(Some(RetentionFloor::new(1).unwrap())).is_ok());
        // a preset only counts when a rule or the default uses it
        let mut c = RetentionConfig::default();
        c.rules.push(RuleConfig {
            tenants: vec![],
            interaction_types: vec!["SMS".into()],
            policy: "MIFID2_5Y".into(),
        });
        let problems = c.validate(Some(floor)).unwrap_err();
        assert!(problems[0].contains("MIFID2_5Y"), "{problems:?}");
        assert!(c.validate(Some(RetentionFloor::new(1825).unwrap())).is_ok());
        assert_eq!(c.validate(None).unwrap().below_floor(floor).len(), 1);
    }

    #[test]
    fn floors_are_bounded() {
        assert!(RetentionFloor::new(0).is_err());
        assert!(RetentionFloor::new(40_000).is_err());
        let f = RetentionFloor::new(10).unwrap();
        assert!(f.passed(at("1970-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z")));
        assert!(!f.passed(at("2025-12-30T00:00:00Z"), at("2026-01-01T00:00:00Z")));
    }
}

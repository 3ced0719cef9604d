//! `%START_TIME(...)%` formats: the strftime subset Envoy users write, always in UTC, plus Envoy's
//! `%s` (epoch seconds) and `%f` / `%3f` / `%6f` / `%9f` (fractional seconds).

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// A strftime conversion character (`Y`, `m`, `d`, ...).
    Field(char),
    /// Fractional seconds with this many digits.
    Fraction(usize),
}

/// A parsed time format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFormat(Vec<Piece>);

const SUPPORTED: &str = "aAbBdDeFHIjklmMnpRsStTuwyYzZ%";

impl TimeFormat {
    /// Envoy's default: `2026-12-02T15:45:03.719Z`.
    pub fn envoy_default() -> Self {
        Self::parse("%Y-%m-%dT%H:%M:%S.%3fZ").unwrap_or(TimeFormat(Vec::new()))
    }

    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = spec.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            let mut width = None;
            // absl's `%E<n>S` (seconds with n fractional digits) and `%E<n>f`, which Envoy accepts.
            let extended = chars.peek() == Some(&'E');
            if extended {
                chars.next();
            }
            if let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                width = Some(d as usize);
                chars.next();
            }
            let conv = chars
                .next()
                .ok_or_else(|| format!("time format {spec:?} ends with '%'"))?;
            let piece = match (conv, width) {
                ('S', Some(w)) if extended => {
                    if !lit.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Field('S'));
                    pieces.push(Piece::Literal(".".into()));
                    Piece::Fraction(w.clamp(1, 9))
                }
                ('f', w) => Piece::Fraction(w.unwrap_or(9).clamp(1, 9)),
                (_, _) if extended => {
                    return Err(format!("unsupported time conversion in {spec:?}"))
                }
                // `%E3S` style is not Envoy's; `%3S` isn't either: only `f` takes a width.
                (_, Some(_)) => return Err(format!("unsupported time conversion in {spec:?}")),
                ('%', None) => {
                    lit.push('%');
                    continue;
                }
                (c, None) if SUPPORTED.contains(c) => Piece::Field(c),
                (c, None) => return Err(format!("unsupported time conversion %{c} in {spec:?}")),
            };
            if !lit.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut lit)));
            }
            pieces.push(piece);
        }
        if !lit.is_empty() {
            pieces.push(Piece::Literal(lit));
        }
        Ok(Self(pieces))
    }

    pub fn format(&self, t: SystemTime, out: &mut String) {
        let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => (-(e.duration().as_secs() as i64) - 1, 0),
        };
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, mo, d) = civil_from_days(days);
        let (h, mi, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
        let wday = (days + 4).rem_euclid(7); // 1970-01-01 was a Thursday.
        let yday = days - days_from_civil(y, 1, 1) + 1;
        for piece in &self.0 {
            match piece {
                Piece::Literal(l) => out.push_str(l),
                Piece::Fraction(w) => {
                    let digits = format!("{nanos:09}");
                    out.push_str(&digits[..*w]);
                }
                Piece::Field(c) => {
                    let text = match c {
                        'Y' => y.to_string(),
                        'y' => format!("{:02}", y.rem_euclid(100)),
                        'm' => format!("{mo:02}"),
                        'd' => format!("{d:02}"),
                        'e' => format!("{d:>2}"),
                        'H' => format!("{h:02}"),
                        'k' => format!("{h:>2}"),
                        'I' => format!("{:02}", (h + 11) % 12 + 1),
                        'l' => format!("{:>2}", (h + 11) % 12 + 1),
                        'p' => (if h < 12 { "AM" } else { "PM" }).to_string(),
                        'M' => format!("{mi:02}"),
                        'S' => format!("{s:02}"),
                        'j' => format!("{yday:03}"),
                        's' => secs.to_string(),
                        'u' => (if wday == 0 { 7 } else { wday }).to_string(),
                        'w' => wday.to_string(),
                        'a' => WEEKDAYS[wday as usize][..3].to_string(),
                        'A' => WEEKDAYS[wday as usize].to_string(),
                        'b' => MONTHS[(mo - 1) as usize][..3].to_string(),
                        'B' => MONTHS[(mo - 1) as usize].to_string(),
                        'F' => format!("{y}-{mo:02}-{d:02}"),
                        'D' => format!("{mo:02}/{d:02}/{:02}", y.rem_euclid(100)),
                        'T' => format!("{h:02}:{mi:02}:{s:02}"),
                        'R' => format!("{h:02}:{mi:02}"),
                        'z' => "+0000".to_string(),
                        'Z' => "UTC".to_string(),
                        'n' => "\n".to_string(),
                        't' => "\t".to_string(),
                        _ => String::new(),
                    };
                    out.push_str(&text);
                }
            }
        }
    }
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    fn fmt(spec: &str, t: SystemTime) -> String {
        let mut s = String::new();
        TimeFormat::parse(spec).expect("format").format(t, &mut s);
        s
    }

    #[test]
    fn default_matches_envoy() {
        let mut s = String::new();
        // 2026-12-02T15:45:03.719Z, taken from a real Envoy 1.40 log line.
        TimeFormat::envoy_default().format(at(1_796_226_303, 719), &mut s);
        assert_eq!(s, "2026-12-02T15:45:03.719Z");
    }

    #[test]
    fn custom_formats_match_envoy() {
        let t = at(1_796_226_416, 714);
        assert_eq!(fmt("%s.%3f", t), "1796226416.714");
        assert_eq!(
            fmt("%Y/%m/%d %H:%M:%S %z %e %%", t),
            "2026/12/02 15:46:56 +0000  2 %"
        );
        assert_eq!(
            fmt("%a %b %j %F %T %6f", t),
            "Wed Dec 336 2026-12-02 15:46:56 714000"
        );
        assert_eq!(fmt("%Y-%m-%d", at(951_782_400, 0)), "2000-02-29");
        assert!(TimeFormat::parse("%Q").is_err());
        assert!(TimeFormat::parse("abc%").is_err());
    }
}

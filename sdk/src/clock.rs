//! Time as the gateway sees it. In unit tests the test host's clock, which the test sets: see
//! [`crate::testing::TestHost::set_now_ms`].
//!
//! ```
//! let started = gateway_sdk::clock::monotonic_ns();
//! let elapsed_ns = gateway_sdk::clock::monotonic_ns() - started;
//! ```

use crate::backend;

/// Milliseconds since the Unix epoch.
///
/// ```
/// let now = gateway_sdk::clock::now_ms();
/// ```
pub fn now_ms() -> u64 {
    backend::now_ms()
}

/// Nanoseconds on a clock that never goes backwards; only differences are meaningful.
///
/// ```
/// let t = gateway_sdk::clock::monotonic_ns();
/// ```
pub fn monotonic_ns() -> u64 {
    backend::monotonic_ns()
}

/// Formats milliseconds since the Unix epoch as RFC 3339 in UTC with milliseconds, the format
/// of the gateway's error timestamps.
///
/// ```
/// assert_eq!(gateway_sdk::clock::rfc3339(0), "1970-01-01T00:00:00.000Z");
/// assert_eq!(gateway_sdk::clock::rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
/// ```
pub fn rfc3339(ms: u64) -> String {
    let days = ms / 86_400_000;
    let in_day = ms % 86_400_000;
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

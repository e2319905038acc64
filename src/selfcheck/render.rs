//! Plain-text rendering of a [`SelfCheckReport`]: a header, one table line per row (cells longer
//! than [`MAX_CELL`] characters are cut with `…`; `--json` has the full text), the fix under the
//! first failing row that needs it (a fix shared by several rows is printed once), and the
//! verdict. Pure.

use super::report::{Row, SelfCheckReport, Verdict};

/// Longest cell shown in the table, in characters.
pub const MAX_CELL: usize = 60;

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_CELL {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX_CELL - 1).collect();
        out.push('…');
        out
    }
}

fn result(r: &Row) -> &'static str {
    match (r.pass, r.inconclusive) {
        (true, _) => "PASS",
        (false, true) => "UNKNOWN",
        (false, false) => "FAIL",
    }
}

/// The report as a text table.
pub fn render_text(report: &SelfCheckReport) -> String {
    let header = [
        "CHECK",
        "CALL",
        "PRIVILEGE",
        "EXPECTED",
        "OBSERVED",
        "RESULT",
    ];
    let cells: Vec<[String; 6]> = report
        .rows
        .iter()
        .map(|r| {
            [
                format!("{} {}", r.check.number(), r.check.as_str()),
                cut(&r.call),
                cut(&r.privilege),
                cut(&r.expected),
                cut(&r.observed),
                result(r).to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| -> String {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        s.push('\n');
        s
    };

    let mut out = format!(
        "self-check of guest {} on {} with token {}\n",
        report.vmid, report.node, report.token_id
    );
    out.push_str(&line(&header.map(str::to_string)));
    let mut shown: Vec<&str> = Vec::new();
    for (row, c) in report.rows.iter().zip(&cells) {
        out.push_str(&line(c));
        if !row.pass
            && let Some(fix) = &row.fix
            && !shown.contains(&fix.as_str())
        {
            shown.push(fix);
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    let failed = report.failures().count();
    let verdict = match report.verdict {
        Verdict::Pass => format!(
            "verdict: PASS, all {} rows hold (exit {})",
            report.rows.len(),
            report.exit_code
        ),
        Verdict::Violation => format!(
            "verdict: VIOLATION, {failed} of {} rows failed (exit {})",
            report.rows.len(),
            report.exit_code
        ),
        Verdict::CouldNotRun => format!(
            "verdict: COULD NOT RUN: {} (exit {})",
            report
                .error
                .as_deref()
                .unwrap_or("some answers proved nothing (see UNKNOWN rows)"),
            report.exit_code
        ),
    };
    out.push_str(&verdict);
    out.push('\n');
    out
}

//! Plain-text tables in kubectl's style: upper-case headers, columns padded with spaces and at
//! least three spaces apart, no borders, so `grep` and `awk` work on the output as on kubectl's.

/// Renders `rows` under `headers`. The last column is not padded, so long messages do not leave
/// trailing blanks.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate().take(columns) {
            text.push_str(cell);
            if i + 1 < columns {
                let pad = widths[i] - cell.chars().count() + 3;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A percentage with one decimal, as people read shares.
pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns_like_kubectl() {
        let rows = vec![
            vec!["v1".to_owned(), "gpt-4.1".to_owned(), "75%".to_owned()],
            vec!["canary-v2".to_owned(), "gpt-4o".to_owned(), String::new()],
        ];
        let text = render(&["VERSION", "MODEL", "WEIGHT"], &rows);
        assert_eq!(
            text,
            "VERSION     MODEL     WEIGHT\n\
             v1          gpt-4.1   75%\n\
             canary-v2   gpt-4o\n"
        );
    }

    #[test]
    fn percent_has_one_decimal() {
        assert_eq!(percent(0.25), "25.0%");
        assert_eq!(percent(1.0 / 3.0), "33.3%");
    }
}

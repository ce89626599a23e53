//! The report's table: rows of figures under section headings, and how a figure is written.

use serde_json::{Value, json};

use crate::figures::Distribution;

/// Rows of figures under section headings, each with its goal (and whether it was met) if it has one.
#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
}

enum Row {
    Section(String),
    Figure {
        label: String,
        value: String,
        goal: Option<(String, bool)>,
    },
}

impl Table {
    pub fn section(&mut self, title: impl Into<String>) {
        self.rows.push(Row::Section(title.into()));
    }

    pub fn row(&mut self, label: &str, value: String, goal: Option<(&str, bool)>) {
        self.rows.push(Row::Figure {
            label: label.to_owned(),
            value,
            goal: goal.map(|(text, met)| (text.to_owned(), met)),
        });
    }

    pub fn render(&self, header: &str) -> String {
        let width = |f: fn(&Row) -> usize| self.rows.iter().map(f).max().unwrap_or(0);
        let label_width = width(|r| match r {
            Row::Figure { label, .. } => label.len(),
            Row::Section(_) => 0,
        });
        let value_width = width(|r| match r {
            Row::Figure { value, .. } => value.len(),
            Row::Section(_) => 0,
        });
        let mut out = format!("{header}\n");
        for row in &self.rows {
            match row {
                Row::Section(title) => out.push_str(&format!("\n{title}\n")),
                Row::Figure { label, value, goal } => {
                    let goal = match goal {
                        Some((text, true)) => format!("goal {text}: met"),
                        Some((text, false)) => format!("goal {text}: MISSED"),
                        None => String::new(),
                    };
                    let line = format!("  {label:<label_width$}  {value:<value_width$}  {goal}");
                    out.push_str(line.trim_end());
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Every figure that has a goal, for the JSON report.
    pub fn goals_json(&self) -> Value {
        let mut section = "";
        let mut goals = Vec::new();
        for row in &self.rows {
            match row {
                Row::Section(title) => section = title,
                Row::Figure {
                    label,
                    value,
                    goal: Some((goal, met)),
                } => goals.push(json!({
                    "section": section,
                    "figure": label,
                    "value": value,
                    "goal": goal,
                    "met": met,
                })),
                Row::Figure { goal: None, .. } => {}
            }
        }
        Value::Array(goals)
    }
}

pub(super) fn ms(v: f64) -> String {
    format!("{v:.1} ms")
}

pub(super) fn percentiles(d: &Distribution) -> String {
    format!(
        "{} / {} / {} / {}",
        ms(d.p50),
        ms(d.p95),
        ms(d.p99),
        ms(d.max)
    )
}

pub(super) fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("not reached".to_owned(), |v| format!("{v:.1} {unit}"))
}

pub(super) fn ratio(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

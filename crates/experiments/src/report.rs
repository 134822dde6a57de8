//! Plain-text tables and number formatting, for the reproduction's report and the `mdem`
//! command's output.

use std::fmt;

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Left-aligned (text).
    Left,
    /// Right-aligned (numbers).
    Right,
}

/// A plain-text table with a header row, columns padded to their widest cell.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    header: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers; the first column is left-aligned, the others
    /// right-aligned.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        let header: Vec<String> = header.into_iter().map(Into::into).collect();
        let align = (0..header.len())
            .map(|j| if j == 0 { Align::Left } else { Align::Right })
            .collect();
        Table {
            header,
            align,
            rows: Vec::new(),
        }
    }
    /// Sets column `j`'s alignment (ignored if there is no such column).
    pub fn align(mut self, j: usize, a: Align) -> Self {
        if let Some(x) = self.align.get_mut(j) {
            *x = a;
        }
        self
    }
    /// Appends a row (missing cells are blank, extra cells are dropped).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut r: Vec<String> = cells.into_iter().map(Into::into).collect();
        r.resize(self.header.len(), String::new());
        self.rows.push(r);
    }
    /// Number of rows (without the header).
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w: Vec<usize> = (0..self.header.len())
            .map(|j| {
                std::iter::once(&self.header[j])
                    .chain(self.rows.iter().map(|r| &r[j]))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            let mut out = String::new();
            for (j, c) in cells.iter().enumerate() {
                if j > 0 {
                    out.push_str("  ");
                }
                let pad = w[j].saturating_sub(c.chars().count());
                match self.align[j] {
                    Align::Left => {
                        out.push_str(c);
                        out.push_str(&" ".repeat(pad));
                    }
                    Align::Right => {
                        out.push_str(&" ".repeat(pad));
                        out.push_str(c);
                    }
                }
            }
            writeln!(f, "{}", out.trim_end())
        };
        line(f, &self.header)?;
        let total = w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
        writeln!(f, "{}", "-".repeat(total))?;
        for r in &self.rows {
            line(f, r)?;
        }
        Ok(())
    }
}

/// A number in at most `sig` significant digits: fixed notation for magnitudes in
/// $[10^{-3}, 10^{6})$, scientific otherwise; `NaN`/`inf` spelled out.
pub fn num(v: f64, sig: usize) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let sig = sig.max(1);
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if (1e-3..1e6).contains(&a) {
        let digits = a.log10().floor() as i64;
        let decimals = (sig as i64 - 1 - digits).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.prec$e}", prec = sig - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(["name", "value"]);
        t.row(["a", "1.5"]);
        t.row(["long name", "10"]);
        let s = t.to_string();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "name       value");
        assert_eq!(lines[2], "a            1.5");
        assert_eq!(lines[3], "long name     10");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn numbers_round_trip_to_the_stated_precision() {
        for &v in &[1234.5678, -0.012345, 3.0e-9, 7.25e8, 1.0, -2.5] {
            let s = num(v, 6);
            let back: f64 = s.parse().unwrap();
            assert!((back - v).abs() <= 1e-5 * v.abs(), "{v} -> {s}");
        }
        assert_eq!(num(0.0, 4), "0");
        assert_eq!(num(f64::NAN, 4), "NaN");
        assert_eq!(num(1234.5678, 6), "1234.57");
        assert_eq!(num(3.0e-9, 3), "3.00e-9");
    }
}

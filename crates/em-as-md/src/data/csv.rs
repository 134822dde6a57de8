//! Loading a data set from a CSV file with a header row, and checking it before a fit.
//!
//! [`load_csv`] reads the file in blocks (split by hand and parsed with `fast_float2` when a
//! block has no quote character; by the `csv` crate otherwise, and whenever a block has
//! something to report, so values and messages are the `csv` crate's), selects the target
//! column and the feature columns by name, and builds a [`Dataset`] (with the intercept
//! column prepended when asked). Everything that would make a fit meaningless or
//! numerically impossible is refused with a [`DataError`] whose `Display` is **one line**
//! naming the file, the line, the column and what was expected, so the command line can
//! print it as it is and exit with code 2.
//!
//! # Line numbers
//! Lines are counted as in a text editor or a spreadsheet: **the header is line 1**, the
//! first data row is line 2. Messages give both, e.g.
//! `data.csv: line 5 (data row 4; the header is line 1), column "bmi": expected a number, found "abc"`.
//! (The `csv` crate skips blank lines; the line reported is the physical line where the
//! record starts, so it still matches the editor.)
//!
//! # What is checked, and the policy
//! - the file can be read, is UTF-8 CSV, has a header and at least one data row;
//! - no two header columns share a name; the target and every requested feature exist,
//!   and the target is not also a feature;
//! - every row has as many fields as the header (ragged rows);
//! - every selected cell parses as a number ([`DataError::NonNumeric`]; an empty cell is
//!   non-numeric) and is finite ([`DataError::NonFinite`]: `NaN`, `inf`);
//! - at least as many rows as design columns (features, plus one for the intercept);
//! - **constant feature columns.** With an intercept, a constant column duplicates it:
//!   an error ([`DataError::ConstantColumn`]) unless [`LoadOptions::drop_constant`] is set,
//!   in which case the column is dropped and a [`DataWarning::DroppedConstant`] is
//!   recorded. Without an intercept a constant column *is* an intercept: it is kept and a
//!   [`DataWarning::ConstantActsAsIntercept`] is recorded — except an all-zero column,
//!   which carries nothing and is an error (or dropped).
//! - **exactly collinear columns** ([`DataError::Collinear`]): the Gram matrix of the
//!   design (columns centred when an intercept is fitted, then scaled to unit diagonal)
//!   is factored by faer's Cholesky $G = L L^\top$; $L_{jj}^2 = 1 - R_j^2$ is the share
//!   of column $j$ not explained by the columns before it, and the first column with
//!   $L_{jj}^2 < 10^{-10}$ (or a failed pivot) is named, with the earlier columns it
//!   depends on.
//!
//! The target's support for a given expert is not checked here: whoever knows the expert
//! checks it once the data is loaded (the `mdem` command line does, reporting an offending
//! row with [`DataError::TargetOutOfSupport`] or [`DataError::TargetUnusable`] and the
//! row's line from [`LoadedData::lines`], from the expert's registry entry).
//!
//! The messages are written for the `mdem` command line, which prints them as they are:
//! some name its flags (`--features`, `--no-intercept`).

use super::blocks::{Block, Blocks, NotTextError, BLOCK_BYTES};
use crate::Dataset;
use faer::{Mat, MatRef};
use memchr::memchr;
use rayon::prelude::*;
use std::fmt;
use std::io::Read;
use std::path::Path;

/// Relative residual variance $1 - R_j^2$ below which a column counts as an exact linear
/// combination of the columns before it.
pub const COLLINEAR_TOL: f64 = 1e-10;

/// Everything that can be wrong with a CSV data file. `Display` is one line naming the
/// file, the line (header = line 1), the column and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{file}: cannot read the file: {source}")]
    Io {
        /// The file.
        file: String,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// The data argument is not a regular file (a directory, a device such as
    /// `/dev/zero`, a FIFO): only regular files and `-` (standard input) are read.
    #[error("{file}: not a regular file ({kind}); expected a CSV file or - for standard input")]
    NotRegularFile {
        /// The file.
        file: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// The bytes cannot be CSV text: a NUL byte, or a line longer than [`MAX_LINE_BYTES`]
    /// (checked while reading, so an endless stream is refused at once).
    #[error("{file}: line {line}: not a CSV file: {reason}")]
    NotCsv {
        /// The file.
        file: String,
        /// Physical line (header = line 1).
        line: u64,
        /// What was found.
        reason: &'static str,
    },
    /// The CSV parser failed (for example, bytes that are not UTF-8).
    #[error("{file}: line {line}: not valid CSV: {reason}")]
    Parse {
        /// The file.
        file: String,
        /// Physical line (header = line 1), 0 if unknown.
        line: u64,
        /// The parser's explanation.
        reason: String,
    },
    /// The file has no header line at all.
    #[error(
        "{file}: the file is empty; expected a header line naming the columns, then data rows"
    )]
    Empty {
        /// The file.
        file: String,
    },
    /// A header but no data rows.
    #[error("{file}: the header (line 1) is followed by no data rows")]
    NoDataRows {
        /// The file.
        file: String,
    },
    /// Two header columns have the same name (or a feature was requested twice).
    #[error("{file}: line 1 (header), column \"{column_c}\": the name appears more than once; column names must be unique", column_c = clip(column))]
    DuplicateColumn {
        /// The file.
        file: String,
        /// The repeated name.
        column: String,
    },
    /// The target column is not in the header.
    #[error(
        "{file}: line 1 (header): no target column \"{target_c}\"; the columns are {}",
        list(available), target_c = clip(target)
    )]
    MissingTarget {
        /// The file.
        file: String,
        /// The requested target name.
        target: String,
        /// The header's column names.
        available: Vec<String>,
    },
    /// A requested feature column is not in the header.
    #[error(
        "{file}: line 1 (header): no feature column \"{column_c}\"; the columns are {}",
        list(available), column_c = clip(column)
    )]
    UnknownFeature {
        /// The file.
        file: String,
        /// The requested feature name.
        column: String,
        /// The header's column names.
        available: Vec<String>,
    },
    /// The target was also requested as a feature.
    #[error("{file}: column \"{column_c}\" is the target and cannot also be a feature", column_c = clip(column))]
    TargetIsFeature {
        /// The file.
        file: String,
        /// The column.
        column: String,
    },
    /// A row has more or fewer fields than the header.
    #[error("{file}: line {line} (data row {row}; the header is line 1): expected {expected} fields as in the header, found {found} ({})", ragged_detail(*expected, *found, column))]
    Ragged {
        /// The file.
        file: String,
        /// Physical line (header = line 1).
        line: u64,
        /// 1-based data row (header not counted).
        row: usize,
        /// Fields in the header.
        expected: usize,
        /// Fields in this row.
        found: usize,
        /// The first missing column (short row) or the last header column (long row).
        column: String,
    },
    /// A cell that is not a number.
    #[error("{file}: line {line} (data row {row}; the header is line 1), column \"{column_c}\": expected a number, found {}", show_cell(value), column_c = clip(column))]
    NonNumeric {
        /// The file.
        file: String,
        /// Physical line (header = line 1).
        line: u64,
        /// 1-based data row (header not counted).
        row: usize,
        /// The column.
        column: String,
        /// The cell's text.
        value: String,
    },
    /// A cell that parses to NaN or ±infinity.
    #[error("{file}: line {line} (data row {row}; the header is line 1), column \"{column_c}\": expected a finite number, found \"{value_c}\"", column_c = clip(column), value_c = clip(value))]
    NonFinite {
        /// The file.
        file: String,
        /// Physical line (header = line 1).
        line: u64,
        /// 1-based data row (header not counted).
        row: usize,
        /// The column.
        column: String,
        /// The cell's text.
        value: String,
    },
    /// Fewer data rows than design columns.
    #[error("{file}: {rows} data rows but {columns} design columns ({detail}); expected at least as many rows as columns")]
    TooFewRows {
        /// The file.
        file: String,
        /// Data rows.
        rows: usize,
        /// Design columns (features plus intercept).
        columns: usize,
        /// Which columns.
        detail: String,
    },
    /// A constant feature column where it cannot be used.
    #[error("{file}: column \"{column_c}\" is constant (every row is {value}); {reason}", column_c = clip(column))]
    ConstantColumn {
        /// The file.
        file: String,
        /// The column.
        column: String,
        /// Its value.
        value: f64,
        /// Why that is an error here and what to do.
        reason: String,
    },
    /// A column whose values are too large (their squares overflow) or all too small (the
    /// column's scale is below [`MIN_SCALE`]) for the fit's sums of squares.
    #[error("{file}: line {line} (data row {row}; the header is line 1), column \"{column_c}\": {value:e} {}; rescale the column", scale_detail(*value), column_c = clip(column))]
    BadScale {
        /// The file.
        file: String,
        /// Physical line of the largest value in absolute terms.
        line: u64,
        /// Its 1-based data row.
        row: usize,
        /// The column.
        column: String,
        /// The value.
        value: f64,
    },
    /// The target column has the same value in every row: there is nothing to model.
    #[error("{file}: target column \"{column_c}\" is constant (every row is {value}); expected a target that varies across rows", column_c = clip(column))]
    ConstantTarget {
        /// The file.
        file: String,
        /// The target column.
        column: String,
        /// Its value.
        value: f64,
    },
    /// A feature column that is an exact linear combination of earlier design columns.
    #[error("{file}: column \"{column_c}\" is an exact linear combination of {} (1 − R² = {residual:.1e}); expected linearly independent feature columns: drop one with --features", list_or_intercept(depends_on), column_c = clip(column))]
    Collinear {
        /// The file.
        file: String,
        /// The first dependent column, in design order.
        column: String,
        /// The earlier columns it depends on (largest coefficients first).
        depends_on: Vec<String>,
        /// Its relative residual variance $1 - R^2$ given the earlier columns.
        residual: f64,
    },
    /// The target lies outside the support of the chosen expert.
    #[error("{file}: line {line} (data row {row}; the header is line 1), column \"{column_c}\": {expert} experts expect {expected}, found {value}", column_c = clip(column))]
    TargetOutOfSupport {
        /// The file.
        file: String,
        /// Physical line (header = line 1).
        line: u64,
        /// 1-based data row (header not counted).
        row: usize,
        /// The target column.
        column: String,
        /// The expert's registry name (e.g. `logistic`).
        expert: String,
        /// The support, in words (the registry entry's; boxed to keep the error small).
        expected: Box<str>,
        /// The offending value.
        value: f64,
    },
    /// The target column as a whole cannot be modelled by the expert (e.g. a multinomial
    /// target with a single class).
    #[error("{file}: column \"{column_c}\": {expert} experts expect {expected}, found {found}", column_c = clip(column))]
    TargetUnusable {
        /// The file.
        file: String,
        /// The target column.
        column: String,
        /// The expert's registry name.
        expert: String,
        /// What is needed.
        expected: String,
        /// What the column has.
        found: String,
    },
    /// The data set could not be built (should not happen after the checks above).
    #[error("{file}: {source}")]
    Dataset {
        /// The file.
        file: String,
        /// The library's error.
        #[source]
        source: crate::MoeError,
    },
}

impl DataError {
    /// The same error with its data row counted `rows` further: a block's errors count
    /// rows from the block's start.
    fn after_rows(mut self, rows: usize) -> Self {
        if let DataError::Ragged { row, .. }
        | DataError::NonNumeric { row, .. }
        | DataError::NonFinite { row, .. } = &mut self
        {
            *row += rows;
        }
        self
    }
}

fn list(names: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("\"{}\"", clip(n)))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", … ({} in all)", names.len()));
    }
    s
}

fn list_or_intercept(names: &[String]) -> String {
    if names.is_empty() {
        "earlier columns".to_string()
    } else {
        list(names)
    }
}

fn ragged_detail(expected: usize, found: usize, column: &str) -> String {
    if found < expected {
        format!("column \"{}\" and after are missing", clip(column))
    } else {
        format!("extra fields after the last column \"{}\"", clip(column))
    }
}

/// Longest echo of a cell or a column name in a message, in characters.
pub const MAX_ECHO_CHARS: usize = 80;

/// `text` as a message shows it: control characters escaped (a quoted cell may hold a
/// line break; the message stays one line) and cut to [`MAX_ECHO_CHARS`] characters (a
/// 10 MB cell or header is named, not printed): the first characters, `…`, and the full
/// length in bytes.
pub fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    let long = text.chars().nth(MAX_ECHO_CHARS).is_some();
    if !long && !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut head = String::new();
    let keep = if long {
        MAX_ECHO_CHARS - 3
    } else {
        MAX_ECHO_CHARS
    };
    for c in text.chars().take(keep) {
        if c.is_control() {
            head.extend(c.escape_default());
        } else {
            head.push(c);
        }
    }
    if long {
        format!("{head}… ({} bytes)", text.len()).into()
    } else {
        head.into()
    }
}

/// Largest absolute value allowed in a column: its square, $10^{300}$, and sums of
/// squares over millions of rows stay finite.
pub const MAX_ABS_VALUE: f64 = 1e150;
/// Smallest allowed scale (largest absolute value) of a non-zero column: below it squares
/// underflow to zero or to subnormals.
pub const MIN_SCALE: f64 = 1e-150;

fn scale_detail(value: f64) -> String {
    if value.abs() > MAX_ABS_VALUE {
        format!("is too large: its square overflows (expected |values| ≤ {MAX_ABS_VALUE:e})")
    } else {
        format!("is the column's largest value in size, below {MIN_SCALE:e}: its square underflows")
    }
}

/// The row (0-based) of `col`'s largest absolute value when the column is out of scale:
/// above [`MAX_ABS_VALUE`], or non-zero but all below [`MIN_SCALE`].
fn out_of_scale(col: &[f64]) -> Option<usize> {
    let (i, m) = col
        .iter()
        .enumerate()
        .map(|(i, v)| (i, v.abs()))
        .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    (m > MAX_ABS_VALUE || (m > 0.0 && m < MIN_SCALE)).then_some(i)
}

/// Per feature column of a design stored as `xt` (d × n, one data row per column; the
/// first `off` rows are the intercept and skipped), in one pass over the rows: where the
/// largest magnitude is, and whether every value equals the first.
struct ColumnStats {
    /// `(row, |value|)` of the first largest magnitude.
    max_abs: Vec<(usize, f64)>,
    /// Whether the column is constant.
    constant: Vec<bool>,
}

impl ColumnStats {
    fn of(xt: MatRef<'_, f64>, off: usize) -> Self {
        let p = xt.nrows() - off;
        let mut max_abs = vec![(0, 0.0); p];
        let mut constant = vec![true; p];
        for i in 0..xt.ncols() {
            for k in 0..p {
                let v = xt[(k + off, i)];
                if v.abs() > max_abs[k].1 {
                    max_abs[k] = (i, v.abs());
                }
                constant[k] &= v == xt[(k + off, 0)];
            }
        }
        ColumnStats { max_abs, constant }
    }

    /// As [`out_of_scale`] for feature `k`.
    fn out_of_scale(&self, k: usize) -> Option<usize> {
        let (i, m) = self.max_abs[k];
        (m > MAX_ABS_VALUE || (m > 0.0 && m < MIN_SCALE)).then_some(i)
    }
}

fn show_cell(value: &str) -> String {
    if value.is_empty() {
        "an empty cell".to_string()
    } else {
        format!("\"{}\"", clip(value))
    }
}

/// Something worth telling the user that does not stop the fit.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DataWarning {
    /// A constant column was dropped ([`LoadOptions::drop_constant`]).
    DroppedConstant {
        /// The column.
        column: String,
        /// Its value.
        value: f64,
    },
    /// Without a fitted intercept, a non-zero constant column plays its role.
    ConstantActsAsIntercept {
        /// The column.
        column: String,
        /// Its value.
        value: f64,
    },
}

impl fmt::Display for DataWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataWarning::DroppedConstant { column, value } => {
                write!(
                    f,
                    "dropped constant column \"{column}\" (every row is {value})"
                )
            }
            DataWarning::ConstantActsAsIntercept { column, value } => write!(
                f,
                "column \"{column}\" is constant ({value}) and acts as the intercept"
            ),
        }
    }
}

/// How to load: intercept and the constant-column policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Prepend a constant-1 intercept column to the design.
    pub intercept: bool,
    /// Drop constant feature columns (recording a warning) instead of refusing them.
    pub drop_constant: bool,
}

impl Default for LoadOptions {
    /// Intercept on, constant columns refused.
    fn default() -> Self {
        LoadOptions {
            intercept: true,
            drop_constant: false,
        }
    }
}

/// A loaded, checked data set.
#[derive(Debug, Clone)]
pub struct LoadedData {
    /// The design (with the intercept column first when one was asked for; the feature
    /// names are set, the intercept is called `(intercept)`) and the target ($q = 1$).
    pub dataset: Dataset,
    /// The file, as given.
    pub file: String,
    /// Every column of the header, in file order.
    pub columns: Vec<String>,
    /// The target column's name.
    pub target: String,
    /// The feature columns used, in design order (without the intercept).
    pub features: Vec<String>,
    /// Whether an intercept column was prepended.
    pub intercept: bool,
    /// Physical line of each data row (header = line 1), for messages about rows.
    pub lines: Vec<u64>,
    /// Warnings (dropped or intercept-like constant columns).
    pub warnings: Vec<DataWarning>,
}

/// Longest line read, in bytes (1 MiB): a longer line (an endless stream, a binary file)
/// is [`DataError::NotCsv`] as soon as it is seen.
pub const MAX_LINE_BYTES: u64 = 1 << 20;

/// Opens a data argument for reading: `-` is standard input, anything else must be a
/// regular file (a device such as `/dev/zero`, a directory or a FIFO is refused before a
/// byte is read). Either is read with the same limits ([`MAX_LINE_BYTES`], no NUL).
///
/// # Errors
/// [`DataError::Io`] when the file cannot be opened, [`DataError::NotRegularFile`].
pub fn open_data(path: &Path) -> Result<Box<dyn Read + Send>, DataError> {
    let file = path.display().to_string();
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufReader::new(std::io::stdin())));
    }
    let io = |source| DataError::Io {
        file: file.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "a device, FIFO or socket"
        };
        return Err(DataError::NotRegularFile { file, kind });
    }
    let f = std::fs::File::open(path).map_err(io)?;
    Ok(Box::new(std::io::BufReader::new(f)))
}

/// An error of the `csv` crate inside `block` as a [`DataError`] naming the file and the
/// physical line.
fn parse_error(e: csv::Error, file: &str, block: &Block, base: usize) -> DataError {
    let line = e.position().map_or(block.first_line, |p| {
        block.line_at(base + p.byte() as usize)
    });
    match e.into_kind() {
        csv::ErrorKind::Io(source) => stream_error(source, file),
        kind => DataError::Parse {
            file: file.to_string(),
            line,
            reason: csv_reason(&kind),
        },
    }
}

/// An error reading the byte stream: [`DataError::NotCsv`] when [`Blocks`] refused the
/// bytes (a NUL byte, an over-long line), [`DataError::Io`] otherwise.
fn stream_error(source: std::io::Error, file: &str) -> DataError {
    match source
        .get_ref()
        .and_then(|r| r.downcast_ref::<NotTextError>())
    {
        Some(NotTextError(t)) => DataError::NotCsv {
            file: file.to_string(),
            line: t.line,
            reason: t.reason,
        },
        None => DataError::Io {
            file: file.to_string(),
            source,
        },
    }
}

/// A `csv` reader over `bytes` with the loader's settings: rows of any width
/// ([`DataError::Ragged`] is reported by the loader with the column it concerns), header
/// names trimmed. Data cells are trimmed by the loader, and only the cells it uses
/// (trimming every field of every record cost a tenth of the parse).
fn csv_reader(bytes: &[u8], has_headers: bool) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(has_headers)
        .flexible(true)
        .trim(csv::Trim::Headers)
        .from_reader(bytes)
}

/// The header of the first block, checked to be present and to have unique names (a hash
/// set, so a 100 000-column header costs linear time), and the reader positioned after it.
fn read_header<'a>(
    first: &'a Block,
    file: &str,
) -> Result<(csv::Reader<&'a [u8]>, Vec<String>), DataError> {
    let mut rdr = csv_reader(&first.bytes, true);
    let header: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => return Err(parse_error(e, file, first, 0)),
    };
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(DataError::Empty { file: file.into() });
    }
    let mut seen = std::collections::HashSet::with_capacity(header.len());
    if let Some(h) = header.iter().find(|h| !seen.insert(h.as_str())) {
        return Err(DataError::DuplicateColumn {
            file: file.into(),
            column: h.clone(),
        });
    }
    Ok((rdr, header))
}

/// The cells of the selected columns of every row, parsed as finite numbers.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    /// Every column of the header, in file order.
    pub header: Vec<String>,
    /// One vector per selected column, in the order selected.
    pub values: Vec<Vec<f64>>,
    /// Physical line of each data row (header = line 1).
    pub lines: Vec<u64>,
}

impl Columns {
    /// Appends a parsed block's rows (its selected columns and lines).
    fn append(&mut self, block: Parsed) {
        self.values.resize_with(block.values.len(), Vec::new);
        for (v, w) in self.values.iter_mut().zip(block.values) {
            v.extend_from_slice(&w);
        }
        self.lines.extend_from_slice(&block.lines);
    }
}

/// Reads CSV from `reader` (`name` is the file in messages): the header, then the columns
/// `select` picks from it (by index; it may refuse the header with an error), every row
/// checked to have the header's width and each selected cell to be a finite number (the
/// first bad cell of a row in file order is reported). Only the selected cells are parsed,
/// so the cost grows with the columns used, not the header's width.
///
/// # Errors
/// `select`'s error; [`DataError::NotCsv`], [`DataError::Parse`], [`DataError::Empty`],
/// [`DataError::DuplicateColumn`], [`DataError::Ragged`], [`DataError::NonNumeric`],
/// [`DataError::NonFinite`], [`DataError::NoDataRows`].
pub fn read_columns<R: Read + Send>(
    reader: R,
    name: &str,
    select: impl FnOnce(&[String]) -> Result<Vec<usize>, DataError>,
) -> Result<Columns, DataError> {
    read_columns_in_blocks(reader, name, select, BLOCK_BYTES)
}

/// [`read_columns`] on the data file at `path`, by its format: Parquet for a `.parquet`
/// extension ([`super::parquet`]: the column names as the header, each row's number + 1
/// as its line, as if a header were line 1), else CSV ([`open_data`]: `-` for standard
/// input, regular files only). `predict` and `certify` read either through it.
///
/// # Errors
/// As [`read_columns`] and [`open_data`]; for Parquet as its reader (a file that is not
/// Parquet, a non-numeric selected column, a null or non-finite value, naming the row
/// and column).
pub fn read_columns_at(
    path: &Path,
    select: impl FnOnce(&[String]) -> Result<Vec<usize>, DataError>,
) -> Result<Columns, DataError> {
    let name = path.display().to_string();
    if !super::parquet::is_parquet(path) {
        return read_columns(open_data(path)?, &name, select);
    }
    let mut acc = Columns::default();
    acc.header = super::parquet::read_parquet_rows(path, select, |c: Parsed| {
        acc.append(c);
        Ok::<(), DataError>(())
    })?;
    Ok(acc)
}

/// [`read_columns`] with blocks of about `block_bytes` (tests cut tiny blocks to check
/// that the result does not depend on where blocks end).
fn read_columns_in_blocks<R: Read + Send>(
    reader: R,
    name: &str,
    select: impl FnOnce(&[String]) -> Result<Vec<usize>, DataError>,
    block_bytes: usize,
) -> Result<Columns, DataError> {
    let mut acc = Columns::default();
    acc.header = read_rows(reader, name, select, block_bytes, |c| {
        acc.append(c);
        Ok::<(), DataError>(())
    })?;
    Ok(acc)
}

/// Reads the header, then hands the selected cells of each block to `sink` in file order
/// as they are parsed, so a loader moves them into its own storage a block at a time and
/// no copy of the file's numbers piles up; returns the header.
pub(crate) fn read_rows<R: Read + Send, E: From<DataError>>(
    reader: R,
    name: &str,
    select: impl FnOnce(&[String]) -> Result<Vec<usize>, DataError>,
    block_bytes: usize,
    mut sink: impl FnMut(Parsed) -> Result<(), E>,
) -> Result<Vec<String>, E> {
    let file = name.to_string();
    let mut blocks = Blocks::new(reader, block_bytes, MAX_LINE_BYTES as usize);
    let first = match blocks.next_block() {
        Ok(Some(b)) => b,
        Ok(None) => return Err(DataError::Empty { file }.into()),
        Err(e) => return Err(stream_error(e, &file).into()),
    };
    let (rdr, header) = read_header(&first, name)?;
    let chosen = select(&header)?;
    // The parsed columns in file order, so the first bad cell of a row is reported.
    let mut in_file_order: Vec<(usize, usize)> =
        chosen.iter().enumerate().map(|(k, &j)| (j, k)).collect();
    in_file_order.sort_unstable();
    let mut slot = vec![NOT_SELECTED; header.len()];
    for &(j, k) in &in_file_order {
        slot[j] = k;
    }
    let rows = RowParser {
        file: &file,
        header: &header,
        in_file_order: &in_file_order,
        n_selected: chosen.len(),
        slot: &slot,
    };
    // The first block's records follow its header: on the fast path when they are plain
    // (a small file is one block, so this is most of its rows), else on the same reader.
    // Later blocks are parsed in parallel, a batch at a time, and appended in file order
    // so the first bad row of the file is the one reported and the result does not
    // depend on the threads.
    let head = match first_rows_start(&rdr, &first).and_then(|at| rows.parse_plain_from(&first, at))
    {
        Some(p) => p,
        None => rows.parse(rdr, &first, 0)?,
    };
    let mut n_rows = head.lines.len();
    sink(head)?;
    drop(first);
    // While one batch is parsed, the next is read: reading and checking the bytes is
    // sequential, so it overlaps the parallel parse instead of adding to it.
    let batch = 2 * rayon::current_num_threads();
    let mut pending = Batch::read(&mut blocks, batch, &file);
    loop {
        if pending.blocks.is_empty() && pending.refused.is_none() {
            break;
        }
        let more = pending.refused.is_none() && pending.blocks.len() == batch;
        let (parsed, next) = rayon::join(
            || {
                pending
                    .blocks
                    .par_iter()
                    .map(|b| match rows.parse_plain(b) {
                        Some(p) => Ok(p),
                        // Quotes, or something to report: the `csv` crate's path, whose
                        // values and errors are the reference.
                        None => rows.parse(csv_reader(&b.bytes, false), b, 0),
                    })
                    .collect::<Vec<_>>()
            },
            || more.then(|| Batch::read(&mut blocks, batch, &file)),
        );
        for p in parsed {
            let p = p.map_err(|e| e.after_rows(n_rows))?;
            n_rows += p.lines.len();
            sink(p)?;
        }
        if let Some(e) = pending.refused {
            return Err(e.into());
        }
        match next {
            Some(next) => pending = next,
            None => break,
        }
    }
    if n_rows == 0 {
        return Err(DataError::NoDataRows { file }.into());
    }
    Ok(header)
}

/// Where the first data row can start: just after the header record that `rdr` has
/// read (its position can be the `\n` of a `\r\n`, which is skipped), if that begins a
/// line (`None` otherwise, e.g. after a header ended by a lone `\r`: the reader's own
/// path then reads the block).
fn first_rows_start(rdr: &csv::Reader<&[u8]>, first: &Block) -> Option<usize> {
    let mut at = usize::try_from(rdr.position().byte()).ok()?;
    if first.bytes.get(at) == Some(&b'\n') {
        at += 1;
    }
    (at <= first.bytes.len() && (at == 0 || first.bytes[at - 1] == b'\n')).then_some(at)
}

/// Blocks read in one go, and the error that stopped the reading (reported once the
/// blocks before it are parsed, so errors come in file order).
struct Batch {
    blocks: Vec<Block>,
    refused: Option<DataError>,
}

impl Batch {
    /// Up to `size` blocks.
    fn read<R: Read>(blocks: &mut Blocks<R>, size: usize, file: &str) -> Batch {
        let mut out = Batch {
            blocks: Vec::with_capacity(size),
            refused: None,
        };
        while out.blocks.len() < size {
            match blocks.next_block() {
                Ok(Some(b)) => out.blocks.push(b),
                Ok(None) => break,
                Err(e) => {
                    out.refused = Some(stream_error(e, file));
                    break;
                }
            }
        }
        out
    }
}

/// The selected cells and lines of a run of rows (a block).
pub(crate) struct Parsed {
    pub(crate) values: Vec<Vec<f64>>,
    pub(crate) lines: Vec<u64>,
    /// Bytes of the block they came from (for a loader's estimate of the rows to come).
    pub(crate) bytes: usize,
}

/// Parses the records of one block: width checked against the header, the selected
/// cells as finite numbers. Rows in its errors count from the block's first row (1); the
/// caller shifts them ([`DataError::after_rows`]).
struct RowParser<'a> {
    file: &'a str,
    header: &'a [String],
    /// `(column in the file, index among the selected)`, in file order.
    in_file_order: &'a [(usize, usize)],
    n_selected: usize,
    /// For each column of the file, its index among the selected, or [`NOT_SELECTED`].
    slot: &'a [usize],
}

/// [`RowParser::slot`] of a column that is not parsed.
const NOT_SELECTED: usize = usize::MAX;

/// `cell` without the leading and trailing bytes `str::trim` removes from ASCII text.
fn trim_ascii_cell(cell: &[u8]) -> &[u8] {
    // `u8::is_ascii_whitespace` leaves out the vertical tab, which `str::trim` removes.
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let start = cell.iter().position(|b| !ws(b)).unwrap_or(cell.len());
    let end = cell.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    &cell[start..end]
}

/// A finite number from a cell of ASCII text, `None` for anything else (the caller then
/// takes the reference path). `fast_float2` accepts the grammar of `str::parse::<f64>`
/// (sign, digits, optional fraction and exponent; tested against it) and rounds
/// correctly, so the value is the same bits.
fn parse_plain_cell(cell: &[u8]) -> Option<f64> {
    fast_float2::parse::<f64, _>(trim_ascii_cell(cell))
        .ok()
        .filter(|v| v.is_finite())
}

impl RowParser<'_> {
    /// The fast path for a block without a quote character: records are the lines
    /// (split at `\n`, one trailing `\r` dropped, empty lines skipped, as the `csv` crate
    /// does), fields are split at commas and the selected ones parsed from the bytes,
    /// with no per-record allocation. `None` as soon as anything is not plain — a quote,
    /// bytes that are not UTF-8, a lone `\r` (a record end to the `csv` crate), a ragged
    /// row, a cell that is not a finite number — so the block is parsed again by
    /// [`RowParser::parse`], whose values and errors are the reference. On `Some`, the
    /// result is that of [`RowParser::parse`] (tested on random and adversarial text).
    fn parse_plain(&self, block: &Block) -> Option<Parsed> {
        self.parse_plain_from(block, 0)
    }

    /// [`Self::parse_plain`] on the block's bytes from `from` on, which must start a line
    /// (the first block after its header).
    fn parse_plain_from(&self, block: &Block, from: usize) -> Option<Parsed> {
        let bytes = &block.bytes[from..];
        if memchr(b'"', bytes).is_some() || std::str::from_utf8(bytes).is_err() {
            return None;
        }
        let rows = block.n_newlines() + 1;
        let mut out = Parsed {
            values: (0..self.n_selected)
                .map(|_| Vec::with_capacity(rows))
                .collect(),
            lines: Vec::with_capacity(rows),
            bytes: bytes.len(),
        };
        let mut line = block.line_of(from);
        let mut start = 0;
        while start < bytes.len() {
            let end = memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |e| start + e);
            let mut record = &bytes[start..end];
            if let [head @ .., b'\r'] = record {
                record = head;
            }
            if !record.is_empty() {
                self.plain_record(record, &mut out.values)?;
                out.lines.push(line);
            }
            line += 1;
            start = end + 1;
        }
        Some(out)
    }

    /// Appends the selected cells of one unquoted record (no line break) to `values`;
    /// `None` if it has a `\r`, another width than the header, or a cell that is not a
    /// finite number.
    fn plain_record(&self, record: &[u8], values: &mut [Vec<f64>]) -> Option<()> {
        let mut field = 0;
        let mut rest = record;
        loop {
            let end = rest
                .iter()
                .position(|&b| b == b',' || b == b'\r')
                .unwrap_or(rest.len());
            if rest.get(end) == Some(&b'\r') {
                return None;
            }
            let k = *self.slot.get(field)?;
            if k != NOT_SELECTED {
                values[k].push(parse_plain_cell(&rest[..end])?);
            }
            field += 1;
            if end == rest.len() {
                break;
            }
            rest = &rest[end + 1..];
        }
        (field == self.slot.len()).then_some(())
    }

    /// The rows `rdr` reads from `block` (whose bytes start `base` bytes into the block).
    fn parse(
        &self,
        mut rdr: csv::Reader<&[u8]>,
        block: &Block,
        base: usize,
    ) -> Result<Parsed, DataError> {
        let (file, header) = (self.file, self.header);
        let width = header.len();
        // Sized once for the block's lines (no doubling chains, see `Blocks::fill`).
        let rows = block.n_newlines() + 1;
        let mut out = Parsed {
            values: (0..self.n_selected)
                .map(|_| Vec::with_capacity(rows))
                .collect(),
            lines: Vec::with_capacity(rows),
            bytes: block.bytes.len() - base,
        };
        let mut record = csv::StringRecord::new();
        loop {
            match rdr.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => return Err(parse_error(e, file, block, base)),
            }
            let line = record
                .position()
                .map_or(0, |p| block.line_at(base + p.byte() as usize));
            let row = out.lines.len() + 1;
            if record.len() != width {
                let column = if record.len() < width {
                    header[record.len()].clone()
                } else {
                    header[width - 1].clone()
                };
                return Err(DataError::Ragged {
                    file: file.into(),
                    line,
                    row,
                    expected: width,
                    found: record.len(),
                    column,
                });
            }
            for &(j, k) in self.in_file_order {
                let text = record[j].trim();
                match text.parse::<f64>() {
                    Ok(v) if v.is_finite() => out.values[k].push(v),
                    parsed => {
                        let (file, column, value) = (file.into(), header[j].clone(), text.into());
                        return Err(if parsed.is_ok() {
                            DataError::NonFinite {
                                file,
                                line,
                                row,
                                column,
                                value,
                            }
                        } else {
                            DataError::NonNumeric {
                                file,
                                line,
                                row,
                                column,
                                value,
                            }
                        });
                    }
                }
            }
            out.lines.push(line);
        }
        Ok(out)
    }
}

/// Loads `path` (CSV with a header row): target column `target`, feature columns
/// `features` (all other columns, in file order, when `None`), an intercept when
/// `intercept`; constant columns are refused with an intercept (see the module doc).
///
/// # Errors
/// A [`DataError`] naming file, line and column; see the module documentation.
pub fn load_csv(
    path: impl AsRef<Path>,
    target: &str,
    features: Option<&[String]>,
    intercept: bool,
) -> Result<LoadedData, DataError> {
    load_csv_with(
        path,
        target,
        features,
        LoadOptions {
            intercept,
            drop_constant: false,
        },
    )
}

/// [`load_csv`] with all options ([`LoadOptions`]).
///
/// # Errors
/// As [`load_csv`].
pub fn load_csv_with(
    path: impl AsRef<Path>,
    target: &str,
    features: Option<&[String]>,
    options: LoadOptions,
) -> Result<LoadedData, DataError> {
    let path = path.as_ref();
    let reader = open_data(path)?;
    // The file's size, to reserve the design once (standard input has none).
    let size = std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    load_sized(
        reader,
        &path.display().to_string(),
        target,
        features,
        options,
        size,
    )
}

/// [`load_csv_with`] from any reader (standard input, a string in a test); `name` is the
/// file name used in messages.
///
/// # Errors
/// As [`load_csv`].
pub fn load_csv_from_reader<R: Read + Send>(
    reader: R,
    name: &str,
    target: &str,
    features: Option<&[String]>,
    options: LoadOptions,
) -> Result<LoadedData, DataError> {
    load_sized(reader, name, target, features, options, None)
}

/// The target's and the features' indices in `header` (`features`: every other column,
/// in file order, when `None`), as [`load_csv`] selects them.
///
/// # Errors
/// [`DataError::MissingTarget`], [`DataError::UnknownFeature`],
/// [`DataError::TargetIsFeature`], [`DataError::DuplicateColumn`].
pub(crate) fn pick_columns(
    header: &[String],
    file: &str,
    target: &str,
    features: Option<&[String]>,
) -> Result<(usize, Vec<usize>), DataError> {
    let index_of = |name: &str| header.iter().position(|h| h == name);
    let target_col = index_of(target).ok_or_else(|| DataError::MissingTarget {
        file: file.to_string(),
        target: target.to_string(),
        available: header.to_vec(),
    })?;
    let feature_cols = match features {
        None => (0..header.len()).filter(|&j| j != target_col).collect(),
        Some(names) => {
            let mut cols = Vec::with_capacity(names.len());
            for name in names {
                let j = index_of(name).ok_or_else(|| DataError::UnknownFeature {
                    file: file.to_string(),
                    column: name.clone(),
                    available: header.to_vec(),
                })?;
                if j == target_col {
                    return Err(DataError::TargetIsFeature {
                        file: file.to_string(),
                        column: name.clone(),
                    });
                }
                if cols.contains(&j) {
                    return Err(DataError::DuplicateColumn {
                        file: file.to_string(),
                        column: name.clone(),
                    });
                }
                cols.push(j);
            }
            cols
        }
    };
    Ok((target_col, feature_cols))
}

/// [`load_csv_from_reader`] knowing the stream's size in bytes, if it is known.
fn load_sized<R: Read + Send>(
    reader: R,
    name: &str,
    target: &str,
    features: Option<&[String]>,
    options: LoadOptions,
    size_hint: Option<u64>,
) -> Result<LoadedData, DataError> {
    let file = name.to_string();
    let mut target_col = 0;
    let mut feature_cols: Vec<usize> = Vec::new();
    let select = |header: &[String]| -> Result<Vec<usize>, DataError> {
        (target_col, feature_cols) = pick_columns(header, &file, target, features)?;
        Ok(feature_cols.iter().copied().chain([target_col]).collect())
    };
    // The design's storage (d × n, a data row per column) filled a block at a time as
    // blocks are parsed: the load peaks at the data set plus a batch of blocks. Its
    // capacity grows geometrically, from an estimate of the rows when the size is known.
    let off = usize::from(options.intercept);
    // Column-major width × n, unpadded (`Dataset::from_design`'s layout).
    let mut xt: Vec<f64> = Vec::new();
    let mut width = off;
    let (mut cap, mut y, mut lines) = (0usize, Vec::new(), Vec::new());
    let header = read_rows(reader, name, select, BLOCK_BYTES, |mut c| {
        let (base, rows) = (lines.len(), c.lines.len());
        width = c.values.len() - 1 + off;
        if base + rows > cap {
            let estimate = size_hint.map_or(0, |total| {
                let per_row = c.bytes as f64 / rows.max(1) as f64;
                (1.02 * total as f64 / per_row.max(1.0)) as usize + 1024
            });
            cap = (base + rows)
                .max(2 * cap)
                .max(if base == 0 { estimate } else { 0 });
            xt.reserve_exact(cap * width - xt.len());
        }
        y.extend_from_slice(&c.values.pop().unwrap_or_default());
        lines.extend_from_slice(&c.lines);
        for i in 0..rows {
            xt.extend(std::iter::repeat_n(1.0, off));
            xt.extend(c.values.iter().map(|col| col[i]));
        }
        Ok::<(), DataError>(())
    })?;
    // Back to an exact allocation when the estimate overshot (no copy when it fits).
    xt.shrink_to_fit();
    let n = lines.len();
    let n_feat = feature_cols.len();
    let line_of = |i: usize| lines.get(i).copied().unwrap_or(i as u64 + 2);
    let stats = ColumnStats::of(MatRef::from_column_major_slice(&xt, width, n), off);
    for (k, &j) in feature_cols.iter().enumerate() {
        if let Some(i) = stats.out_of_scale(k) {
            return Err(DataError::BadScale {
                file,
                line: line_of(i),
                row: i + 1,
                column: header[j].clone(),
                value: xt[i * width + k + off],
            });
        }
    }
    if let Some(i) = out_of_scale(&y) {
        return Err(DataError::BadScale {
            file,
            line: line_of(i),
            row: i + 1,
            column: header[target_col].clone(),
            value: y[i],
        });
    }

    // Constant columns.
    let mut warnings = Vec::new();
    let mut keep = vec![true; n_feat];
    for (k, &j) in feature_cols.iter().enumerate() {
        let v = xt[k + off];
        if n > 1 && stats.constant[k] {
            let column = header[j].clone();
            if options.drop_constant {
                keep[k] = false;
                warnings.push(DataWarning::DroppedConstant { column, value: v });
            } else if options.intercept {
                return Err(DataError::ConstantColumn {
                    file,
                    column,
                    value: v,
                    reason: "with an intercept it is redundant; leave it out with --features, \
                             or fit without an intercept (--no-intercept)"
                        .to_string(),
                });
            } else if v == 0.0 {
                return Err(DataError::ConstantColumn {
                    file,
                    column,
                    value: v,
                    reason: "an all-zero column carries no information; leave it out with \
                             --features"
                        .to_string(),
                });
            } else {
                warnings.push(DataWarning::ConstantActsAsIntercept { column, value: v });
            }
        }
    }
    if keep.contains(&false) {
        // Rare (`--drop-constant` with a constant column): one copy without them.
        let rows: Vec<usize> = (0..off)
            .chain((0..n_feat).filter(|&k| keep[k]).map(|k| k + off))
            .collect();
        xt = (0..n)
            .flat_map(|i| rows.iter().map(move |&r| i * width + r))
            .map(|a| xt[a])
            .collect();
        width = rows.len();
        let mut k = 0;
        feature_cols.retain(|_| {
            k += 1;
            keep[k - 1]
        });
    }
    let names: Vec<String> = feature_cols.iter().map(|&j| header[j].clone()).collect();

    // Rows versus columns.
    let d = names.len() + off;
    if n < d {
        return Err(DataError::TooFewRows {
            file,
            rows: n,
            columns: d,
            detail: format!(
                "{} feature{}{}",
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                if options.intercept {
                    " + intercept"
                } else {
                    ""
                }
            ),
        });
    }

    // Exact collinearity.
    if let Some(dep) = first_collinear(
        MatRef::from_column_major_slice(&xt, width, n),
        off,
        options.intercept,
    ) {
        let depends_on = dep
            .depends_on
            .iter()
            .map(|&k| names[k].clone())
            .chain((options.intercept && dep.uses_constant).then(|| "(intercept)".to_string()))
            .collect();
        return Err(DataError::Collinear {
            file,
            column: names[dep.column].clone(),
            depends_on,
            residual: dep.residual,
        });
    }

    let mut all_names = names.clone();
    if options.intercept {
        all_names.insert(0, "(intercept)".to_string());
    }
    let dataset =
        Dataset::from_design(xt, y, 1, all_names).map_err(|source| DataError::Dataset {
            file: file.clone(),
            source,
        })?;
    Ok(LoadedData {
        dataset,
        file,
        columns: header,
        target: target.to_string(),
        features: names,
        intercept: options.intercept,
        lines,
        warnings,
    })
}

/// Loads `path` for a model **without a target** (a Gaussian mixture of the columns):
/// the `columns` (every column, in file order, when `None`) become the data set's $q$
/// target coordinates $y_i$, and the design is the intercept alone ($d = 1$, named
/// `(intercept)`). The checks of [`load_csv`] apply to the columns: out-of-scale values,
/// constant columns (refused — a constant coordinate makes every component's covariance
/// singular — or dropped with a warning under `options.drop_constant`), fewer rows than
/// columns + 1, and exact collinearity (with the constant). [`LoadedData::target`] is
/// empty and [`LoadedData::features`] names the columns.
///
/// # Errors
/// A [`DataError`] naming file, line and column, as [`load_csv`].
pub fn load_csv_columns(
    path: impl AsRef<Path>,
    columns: Option<&[String]>,
    options: LoadOptions,
) -> Result<LoadedData, DataError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let mut chosen: Vec<usize> = Vec::new();
    let select = |header: &[String]| -> Result<Vec<usize>, DataError> {
        chosen = match columns {
            None => (0..header.len()).collect(),
            Some(names) => {
                let mut cols = Vec::with_capacity(names.len());
                for name in names {
                    let j = header.iter().position(|h| h == name).ok_or_else(|| {
                        DataError::UnknownFeature {
                            file: file.clone(),
                            column: name.clone(),
                            available: header.to_vec(),
                        }
                    })?;
                    if cols.contains(&j) {
                        return Err(DataError::DuplicateColumn {
                            file: file.clone(),
                            column: name.clone(),
                        });
                    }
                    cols.push(j);
                }
                cols
            }
        };
        Ok(chosen.clone())
    };
    // Row-major n × q as the blocks arrive: the data set's target storage, and read as
    // a q × n column-major matrix by the checks (no other copy).
    let (mut y, mut lines) = (Vec::new(), Vec::new());
    let header = read_rows(open_data(path)?, &file, select, BLOCK_BYTES, |c| {
        y.reserve(c.lines.len() * c.values.len());
        for i in 0..c.lines.len() {
            y.extend(c.values.iter().map(|v| v[i]));
        }
        lines.extend_from_slice(&c.lines);
        Ok::<(), DataError>(())
    })?;
    let n = lines.len();
    let line_of = |i: usize| lines.get(i).copied().unwrap_or(i as u64 + 2);
    let q0 = chosen.len();
    let stats = ColumnStats::of(MatRef::from_column_major_slice(&y, q0, n), 0);
    for (k, &j) in chosen.iter().enumerate() {
        if let Some(i) = stats.out_of_scale(k) {
            return Err(DataError::BadScale {
                file,
                line: line_of(i),
                row: i + 1,
                column: header[j].clone(),
                value: y[i * q0 + k],
            });
        }
    }
    let mut warnings = Vec::new();
    let mut keep = vec![true; q0];
    for (k, &j) in chosen.iter().enumerate() {
        let v = y[k];
        if n > 1 && stats.constant[k] {
            let column = header[j].clone();
            if options.drop_constant {
                keep[k] = false;
                warnings.push(DataWarning::DroppedConstant { column, value: v });
            } else {
                return Err(DataError::ConstantColumn {
                    file,
                    column,
                    value: v,
                    reason: "a Gaussian mixture cannot model it (every component's covariance \
                             would be singular); leave it out with --features or drop it with \
                             --drop-constant"
                        .to_string(),
                });
            }
        }
    }
    if keep.contains(&false) {
        // Rare (`--drop-constant` with a constant column): one copy without them.
        y = y
            .chunks_exact(q0)
            .flat_map(|row| row.iter().zip(&keep).filter(|(_, &k)| k).map(|(v, _)| *v))
            .collect();
        let mut k = 0;
        chosen.retain(|_| {
            k += 1;
            keep[k - 1]
        });
    }
    let names: Vec<String> = chosen.iter().map(|&j| header[j].clone()).collect();
    let q = names.len();
    if q == 0 || n < q + 1 {
        return Err(DataError::TooFewRows {
            file,
            rows: n,
            columns: q + 1,
            detail: format!("{q} columns + a mean per component"),
        });
    }
    let coords = MatRef::from_column_major_slice(&y, q, n);
    if let Some(dep) = first_collinear(coords, 0, true) {
        let depends_on = dep
            .depends_on
            .iter()
            .map(|&k| names[k].clone())
            .chain(dep.uses_constant.then(|| "(intercept)".to_string()))
            .collect();
        return Err(DataError::Collinear {
            file,
            column: names[dep.column].clone(),
            depends_on,
            residual: dep.residual,
        });
    }
    let dataset = Dataset::from_design(vec![1.0; n], y, q, vec!["(intercept)".to_string()])
        .map_err(|source| DataError::Dataset {
            file: file.clone(),
            source,
        })?;
    Ok(LoadedData {
        dataset,
        file,
        columns: header,
        target: String::new(),
        features: names,
        intercept: true,
        lines,
        warnings,
    })
}

/// Checks that the target of `loaded` varies across rows: a constant target leaves a
/// mixture nothing to model (a linear expert's variance would be zero). Not part of
/// [`load_csv`], so that an expert's own rule about its target (e.g. a multinomial
/// expert's "at least two classes") can speak first.
///
/// # Errors
/// [`DataError::ConstantTarget`] naming the file and the column.
pub fn check_target_varies(loaded: &LoadedData) -> Result<(), DataError> {
    let y = loaded.dataset.y_all();
    match y.first() {
        Some(&v) if y.len() > 1 && y.iter().all(|&w| w == v) => Err(DataError::ConstantTarget {
            file: loaded.file.clone(),
            column: loaded.target.clone(),
            value: v,
        }),
        _ => Ok(()),
    }
}

fn csv_reason(kind: &csv::ErrorKind) -> String {
    match kind {
        csv::ErrorKind::Utf8 { err, .. } => format!("invalid UTF-8 ({err})"),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("expected {expected_len} fields, found {len}"),
        other => format!("{other:?}"),
    }
}

/// A column found to be an exact linear combination of earlier ones.
pub(crate) struct Dependency {
    /// Its index (0-based, in design order, intercept excluded).
    pub(crate) column: usize,
    /// Earlier columns with a non-negligible coefficient, largest first.
    depends_on: Vec<usize>,
    /// Whether the constant (intercept) is part of the combination.
    uses_constant: bool,
    /// Relative residual variance $1 - R^2$.
    residual: f64,
}

/// The first column (0-based, in the given order) that is an exact linear combination of
/// the columns before it (and of the constant, when `centred`).
///
/// The columns are centred when `centred` (an intercept is fitted: collinearity is then
/// judged modulo the constant) and scaled to unit norm; their Gram matrix $G$ is factored
/// as $G = LL^\top$ with faer. Since $G$ has unit diagonal, $L_{jj}^2$ is the squared
/// distance of column $j$ from the span of columns $0..j$, i.e. $1 - R_j^2$; the first
/// $j$ with $L_{jj}^2 <$ [`COLLINEAR_TOL`] is returned. A failed pivot at index $j$ means
/// $L_{jj}^2 \le 0$ in floating point: the prefix before it is refactored to find any
/// earlier tiny pivot.
pub(crate) fn first_collinear(
    xt: MatRef<'_, f64>,
    off: usize,
    centred: bool,
) -> Option<Dependency> {
    use faer::linalg::matmul::matmul;
    use faer::{Accum, Par};
    let p = xt.nrows() - off;
    if p == 0 {
        return None;
    }
    let n = xt.ncols();
    let x = xt.subrows(off, p);
    let mut means = vec![0.0; p];
    if centred {
        for i in 0..n {
            for (k, m) in means.iter_mut().enumerate() {
                *m += x[(k, i)];
            }
        }
        means.iter_mut().for_each(|m| *m /= n as f64);
    }
    let mut norms = vec![0.0; p];
    for i in 0..n {
        for (k, s) in norms.iter_mut().enumerate() {
            let c = x[(k, i)] - means[k];
            *s += c * c;
        }
    }
    norms.iter_mut().for_each(|s| *s = s.sqrt());
    // A zero-norm column was refused or dropped as constant before; keep it finite here.
    let scale: Vec<f64> = norms
        .iter()
        .map(|&s| if s > 0.0 { 1.0 / s } else { 0.0 })
        .collect();
    // The Gram matrix of the centred, scaled columns, a block of rows at a time (no copy
    // of the data).
    const ROWS: usize = 4096;
    let mut g = Mat::<f64>::zeros(p, p);
    let mut z = Mat::<f64>::zeros(p, ROWS.min(n));
    for start in (0..n).step_by(ROWS) {
        let m = ROWS.min(n - start);
        for i in 0..m {
            for k in 0..p {
                z[(k, i)] = (x[(k, start + i)] - means[k]) * scale[k];
            }
        }
        let zb = z.as_ref().subcols(0, m);
        matmul(g.as_mut(), Accum::Add, zb, zb.transpose(), 1.0, Par::Seq);
    }
    let mut end = p;
    let j = loop {
        let block = g.as_ref().submatrix(0, 0, end, end).to_owned();
        match block.llt(faer::Side::Lower) {
            Ok(llt) => {
                let l = llt.L();
                match (0..end).find(|&j| l[(j, j)] * l[(j, j)] < COLLINEAR_TOL) {
                    Some(j) => break j,
                    None if end == p => return None,
                    // The pivot at `end` failed in the larger block.
                    None => break end,
                }
            }
            Err(faer::linalg::cholesky::llt::factor::LltError::NonPositivePivot { index }) => {
                if index == 0 {
                    break 0;
                }
                end = index;
            }
        }
    };
    Some(dependency(&g, j, &means, &norms))
}

/// Regresses column `j` on columns `0..j` (normal equations on the unit-diagonal Gram
/// matrix, solved by faer's Cholesky with a $10^{-12}$ ridge for the near-singular case)
/// and reports the columns with relative coefficient above $10^{-6}$ (largest first),
/// whether the constant is needed (in original units, the combination's offset
/// $\bar x_j - s_j \sum_k c_k \bar x_k / s_k$ is non-zero), and $1 - R^2$.
fn dependency(g: &Mat<f64>, j: usize, means: &[f64], norms: &[f64]) -> Dependency {
    use faer::linalg::solvers::Solve;
    let fallback = Dependency {
        column: j,
        depends_on: (0..j).collect(),
        uses_constant: means[j] != 0.0,
        residual: 0.0,
    };
    if j == 0 {
        return Dependency {
            depends_on: Vec::new(),
            residual: g[(0, 0)],
            ..fallback
        };
    }
    let a = Mat::from_fn(j, j, |r, c| g[(r, c)] + if r == c { 1e-12 } else { 0.0 });
    let b = Mat::from_fn(j, 1, |r, _| g[(r, j)]);
    let Ok(llt) = a.llt(faer::Side::Lower) else {
        return fallback;
    };
    let coef = llt.solve(&b);
    let explained: f64 = (0..j).map(|r| coef[(r, 0)] * b[(r, 0)]).sum();
    let residual = (g[(j, j)] - explained).max(0.0);
    let max = (0..j).map(|r| coef[(r, 0)].abs()).fold(0.0, f64::max);
    let mut depends_on: Vec<usize> = (0..j)
        .filter(|&r| coef[(r, 0)].abs() > 1e-6 * max.max(1e-300))
        .collect();
    depends_on.sort_by(|&a, &b| coef[(b, 0)].abs().total_cmp(&coef[(a, 0)].abs()));
    // Offset of the combination in original units.
    let offset = means[j]
        - norms[j]
            * (0..j)
                .filter(|&k| norms[k] > 0.0)
                .map(|k| coef[(k, 0)] * means[k] / norms[k])
                .sum::<f64>();
    let size = means[j].abs() + norms[j] / (means.len().max(1) as f64).sqrt();
    Dependency {
        column: j,
        depends_on,
        uses_constant: offset.abs() > 1e-8 * size.max(f64::MIN_POSITIVE),
        residual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        text: &str,
        target: &str,
        features: Option<&[String]>,
        intercept: bool,
    ) -> Result<LoadedData, DataError> {
        load_csv_from_reader(
            text.as_bytes(),
            "t.csv",
            target,
            features,
            LoadOptions {
                intercept,
                drop_constant: false,
            },
        )
    }

    /// An intercept, constant columns dropped (with a warning) instead of refused.
    const DROP_CONSTANT: LoadOptions = LoadOptions {
        intercept: true,
        drop_constant: true,
    };

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The numeric columns `a` and `y` of [`tricky_csv`] (or every column of a narrower
    /// file), read with blocks of `block` bytes.
    fn all_columns(text: &str, block: usize) -> Result<Columns, DataError> {
        let pick = |h: &[String]| {
            Ok(if h.len() == 3 {
                vec![0, 2]
            } else {
                (0..h.len()).collect()
            })
        };
        read_columns_in_blocks(text.as_bytes(), "t.csv", pick, block)
    }

    /// Text with CRLF and LF line ends, blank lines, quoted cells with commas, quotes and
    /// line breaks inside, and an unused text column.
    fn tricky_csv(rows: usize, seed: u64) -> String {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut t = String::from("a,\"no\nte\",y\n");
        for i in 0..rows {
            let end = if rng.random_bool(0.3) { "\r\n" } else { "\n" };
            if rng.random_bool(0.1) {
                t.push_str(end);
            }
            let note = match rng.random_range(0..4) {
                0 => "plain".to_string(),
                1 => "\"a, \"\"quoted\"\"\ncell\"".to_string(),
                2 => "\"\r\n\n\"".to_string(),
                _ => String::new(),
            };
            let a: f64 = rng.random_range(-1e3..1e3);
            t.push_str(&format!("{a},{note},\"{}\"{end}", i % 7));
        }
        t
    }

    #[test]
    fn blocks_do_not_change_values_lines_or_errors() {
        for seed in 0..6 {
            let text = tricky_csv(300, seed);
            let whole = all_columns(&text, 1 << 20).unwrap();
            // Independent: the csv crate reading the whole text, and line numbers by
            // counting the line breaks before each record's first field.
            let mut rdr = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_reader(text.as_bytes());
            let mut expect_a = Vec::new();
            for r in rdr.records() {
                expect_a.push(r.unwrap()[0].parse::<f64>().unwrap());
            }
            assert_eq!(whole.values[0], expect_a);
            assert_eq!(whole.header, names(&["a", "no\nte", "y"]));
            assert_eq!(whole.lines.len(), 300);
            for (i, &line) in whole.lines.iter().enumerate() {
                // The line holds the row's first cell `a`, printed as Rust prints it.
                let start: usize = text
                    .split_inclusive('\n')
                    .take(line as usize - 1)
                    .map(str::len)
                    .sum();
                assert!(
                    text[start..].starts_with(&format!("{},", expect_a[i])),
                    "row {i} line {line}"
                );
            }
            for block in [1, 2, 3, 7, 64, 1000] {
                let b = all_columns(&text, block).unwrap();
                assert_eq!(
                    (&b.values, &b.lines),
                    (&whole.values, &whole.lines),
                    "block {block}"
                );
            }
            // The same first error, whatever the blocks: a bad cell near the end.
            let mut bad = text.clone();
            let at = bad.rfind("\n-").or_else(|| bad.rfind('\n')).unwrap();
            bad.insert(at + 1, 'x');
            let e_whole = all_columns(&bad, 1 << 20)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            for block in [1, 5, 64] {
                let e = all_columns(&bad, block)
                    .map(|_| ())
                    .unwrap_err()
                    .to_string();
                assert_eq!(e, e_whole, "block {block}");
            }
        }
    }

    #[test]
    fn plain_cells_parse_as_str_parse_does() {
        // Random short strings over the characters of numbers and their look-alikes:
        // whenever the fast parser gives a value, `str::parse` on the trimmed text gives
        // the same bits, and the reverse (no plain number is sent the slow way).
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let alphabet = b"0123456789.eE+-_ \t\x0bxinfatyINFAY,";
        for _ in 0..200_000 {
            let len = rng.random_range(0..9);
            let cell: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let text = std::str::from_utf8(&cell).unwrap();
            let reference = text.trim().parse::<f64>().ok().filter(|v| v.is_finite());
            let fast = parse_plain_cell(&cell);
            assert_eq!(
                fast.map(f64::to_bits),
                reference.map(f64::to_bits),
                "{text:?}"
            );
        }
        // Long mantissas, extreme exponents and halfway cases round the same.
        for text in [
            "0.1000000000000000055511151231257827021181583404541015625",
            "2.2250738585072011e-308",
            "4.9e-324",
            "1.7976931348623157e308",
            "9007199254740993",
            "123456789012345678901234567890e-10",
            "1e-400",
            "-0",
        ] {
            assert_eq!(
                parse_plain_cell(text.as_bytes()).map(f64::to_bits),
                text.parse::<f64>().ok().map(f64::to_bits),
                "{text}"
            );
        }
    }

    /// Text without quotes but with what a hand-written splitter can get wrong: CRLF and
    /// LF line ends, blank lines (empty and a lone `\r`), a lone `\r` inside a record,
    /// padded cells, number spellings, non-ASCII text in the unused column, rows with a
    /// missing or extra field or a bad number (when `bad`), a last line with or without
    /// its line break.
    fn plain_csv(rows: usize, seed: u64, bad: bool) -> String {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut t = String::from("a, note ,y\r\n");
        for i in 0..rows {
            let end = if rng.random_bool(0.3) { "\r\n" } else { "\n" };
            match rng.random_range(0..40) {
                0 => t.push_str(end),
                1 => t.push_str("\r\n"),
                2 => t.push('\r'),
                _ => {}
            }
            let a = match rng.random_range(0..8) {
                0 => " +.5 ".to_string(),
                1 => "\t-7.\u{b}".to_string(),
                2 => format!("{}e-3", rng.random_range(-999..999)),
                _ => format!("{}", rng.random_range(-1e3..1e3)),
            };
            // A `\r` inside a record ends it for the `csv` crate: a ragged row.
            let notes = ["plain", "", "é ü", " ", "x\ry"];
            let note = notes[rng.random_range(0..if bad { 5 } else { 4 })];
            let y = i % 7;
            match (bad, rng.random_range(0..200)) {
                (true, 0) => t.push_str(&format!("{a},{note}{end}")),
                (true, 1) => t.push_str(&format!("{a},{note},{y},9{end}")),
                (true, 2) => t.push_str(&format!("{a},{note},1e999{end}")),
                (true, 3) => t.push_str(&format!("x{a},{note},{y}{end}")),
                _ => t.push_str(&format!("{a},{note},{y}{end}")),
            }
        }
        if rng.random_bool(0.5) {
            t.push_str("1,,2");
        }
        t
    }

    #[test]
    fn the_plain_path_agrees_with_the_csv_crate() {
        // Every block of every cut, parsed both ways: where the fast path answers, it is
        // the `csv` crate's answer (values to the bit, lines, bytes). The first block is
        // parsed from after its header, as `read_rows` does.
        let (mut taken, mut head_taken) = (0, 0);
        for seed in 0..4 {
            let text = plain_csv(60, seed, seed % 2 == 1);
            let header = names(&["a", "note", "y"]);
            let order = [(0, 0), (2, 1)];
            let slot = [0, NOT_SELECTED, 1];
            let rows = RowParser {
                file: "t.csv",
                header: &header,
                in_file_order: &order,
                n_selected: 2,
                slot: &slot,
            };
            for size in (1..=200).chain([333, 1000, 1 << 20]) {
                let mut blocks = Blocks::new(text.as_bytes(), size, 1 << 20);
                let mut first = true;
                while let Some(b) = blocks.next_block().unwrap() {
                    // The first block from just after its header (what `read_rows` does
                    // with it), the others whole.
                    let (fast, slow) = if std::mem::take(&mut first) {
                        let (rdr, _) = read_header(&b, "t.csv").unwrap();
                        let Some(at) = first_rows_start(&rdr, &b) else {
                            continue;
                        };
                        let Some(fast) = rows.parse_plain_from(&b, at) else {
                            continue;
                        };
                        head_taken += 1;
                        (fast, rows.parse(rdr, &b, 0).unwrap())
                    } else {
                        let Some(fast) = rows.parse_plain(&b) else {
                            continue;
                        };
                        (
                            fast,
                            rows.parse(csv_reader(&b.bytes, false), &b, 0).unwrap(),
                        )
                    };
                    taken += 1;
                    let bits = |v: &[Vec<f64>]| -> Vec<Vec<u64>> {
                        v.iter()
                            .map(|c| c.iter().map(|x| x.to_bits()).collect())
                            .collect()
                    };
                    assert_eq!(bits(&fast.values), bits(&slow.values), "size {size}");
                    assert_eq!(fast.lines, slow.lines, "size {size}");
                    if fast.bytes != slow.bytes {
                        // The head's count leaves out the header's bytes.
                        assert!(fast.bytes < slow.bytes && !first, "size {size}");
                    }
                }
            }
        }
        assert!(taken > 1000, "the fast path was taken {taken} times");
        assert!(
            head_taken > 10,
            "the first block's rows took the fast path {head_taken} times"
        );
    }

    #[test]
    fn plain_text_reads_the_same_whatever_the_blocks() {
        // Whole reads: one block against blocks of 1 to 1000 bytes (the fast path wherever
        // a block allows it): the same values, lines and first error; and the values and
        // lines of good text are the `csv` crate's own reading of the whole text.
        for seed in 0..4 {
            let text = plain_csv(40, seed, seed % 2 == 1);
            let whole = all_columns(&text, 1 << 20).map_err(|e| e.to_string());
            if seed % 2 == 0 {
                let w = whole.as_ref().unwrap();
                let mut rdr = csv::ReaderBuilder::new()
                    .trim(csv::Trim::All)
                    .from_reader(text.as_bytes());
                let (mut a, mut y, mut lines) = (Vec::new(), Vec::new(), Vec::new());
                for r in rdr.records() {
                    let r = r.unwrap();
                    a.push(r[0].parse::<f64>().unwrap());
                    y.push(r[2].parse::<f64>().unwrap());
                    // The record's line: one more than the line breaks before it, past
                    // any blank lines the reader skipped.
                    let at = r.position().unwrap().byte() as usize;
                    let skip = text[at..].len() - text[at..].trim_start_matches(['\r', '\n']).len();
                    lines.push(1 + text[..at + skip].matches('\n').count() as u64);
                }
                assert_eq!(w.values, vec![a, y], "seed {seed}");
                assert_eq!(w.lines, lines, "seed {seed}");
            }
            for size in 1..=1000 {
                let b = all_columns(&text, size).map_err(|e| e.to_string());
                match (&b, &whole) {
                    (Ok(b), Ok(w)) => {
                        assert_eq!((&b.values, &b.lines), (&w.values, &w.lines), "{size}")
                    }
                    (Err(b), Err(w)) => assert_eq!(b, w, "size {size}"),
                    _ => panic!("size {size}: {b:?} against {whole:?}"),
                }
            }
        }
    }

    #[test]
    fn nul_bytes_and_long_lines_are_refused_with_their_line() {
        for block in [3, 1 << 20] {
            let e = read_columns_in_blocks(
                "a,y\n1,2\n3,\u{0}4\n".as_bytes(),
                "t.csv",
                |h| Ok((0..h.len()).collect()),
                block,
            )
            .unwrap_err();
            assert!(
                matches!(e, DataError::NotCsv { line: 3, reason, .. } if reason.contains("NUL")),
                "{e:?}"
            );
            let long = format!("a,y\n1,2\n3,{}\n", "4".repeat(MAX_LINE_BYTES as usize));
            let e = read_columns_in_blocks(
                long.as_bytes(),
                "t.csv",
                |h| Ok((0..h.len()).collect()),
                block,
            )
            .unwrap_err();
            assert!(
                matches!(e, DataError::NotCsv { line: 3, reason, .. } if reason.contains("1 MiB")),
                "{e:?}"
            );
        }
        // A line of exactly the limit is fine.
        let ok = format!("a\n{}\n", "1".repeat(MAX_LINE_BYTES as usize));
        assert!(all_columns(&ok, 1 << 20).is_err_and(|e| matches!(e, DataError::NonFinite { .. })));
    }

    #[test]
    fn columns_without_a_target_become_row_major_coordinates() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let opts = |drop_constant| LoadOptions {
            intercept: true,
            drop_constant,
        };
        let p = write("g.csv", "a,k,b\n1,5,2\n3,5,-1\n0,5,4\n2,5,2\n");
        // The constant column is refused, then dropped on request.
        let e = load_csv_columns(&p, None, opts(false)).unwrap_err();
        assert!(matches!(e, DataError::ConstantColumn { ref column, .. } if column == "k"));
        let d = load_csv_columns(&p, None, opts(true)).unwrap();
        assert_eq!((d.dataset.n(), d.dataset.d(), d.dataset.q()), (4, 1, 2));
        assert_eq!(d.features, names(&["a", "b"]));
        assert_eq!(d.dataset.y(1), &[3.0, -1.0]);
        assert_eq!(d.dataset.x(2), &[1.0]);
        assert_eq!(d.lines, vec![2, 3, 4, 5]);
        // A chosen subset, in the order given.
        let f = names(&["b", "a"]);
        let d = load_csv_columns(&p, Some(&f), opts(false)).unwrap();
        assert_eq!(d.dataset.y(0), &[2.0, 1.0]);
        // c = a + b: collinear, named with what it depends on.
        let p = write("c.csv", "a,b,c\n1,2,3\n3,-1,2\n0,4,4\n2,2,4\n5,1,6\n");
        let e = load_csv_columns(&p, None, opts(false)).unwrap_err();
        assert!(
            matches!(e, DataError::Collinear { ref column, ref depends_on, .. }
                if column == "c" && depends_on.len() == 2),
            "{e:?}"
        );
    }

    const GOOD: &str = "a,b,y\n1,2,0\n2,1,1\n3,5,0\n4,3,1\n";

    #[test]
    fn loads_good_data_with_intercept_and_names() {
        let d = load(GOOD, "y", None, true).unwrap();
        assert_eq!((d.dataset.n(), d.dataset.d(), d.dataset.q()), (4, 3, 1));
        assert_eq!(
            d.dataset.feature_names(),
            &names(&["(intercept)", "a", "b"])[..]
        );
        assert_eq!(d.dataset.x(2), &[1.0, 3.0, 5.0]);
        assert_eq!(d.dataset.y_all(), &[0.0, 1.0, 0.0, 1.0]);
        assert_eq!(d.lines, vec![2, 3, 4, 5]);
        assert_eq!(d.columns, names(&["a", "b", "y"]));
        assert!(d.warnings.is_empty());
        // Feature selection and order; target need not be last.
        let f = names(&["b"]);
        let d = load("y,a,b\n0,1,2\n1,2,1\n", "y", Some(&f), false).unwrap();
        assert_eq!(d.dataset.d(), 1);
        assert_eq!(d.dataset.x(1), &[1.0]);
        assert_eq!(d.features, f);
    }

    #[test]
    fn ragged_rows_name_line_and_column() {
        let e = load("a,b,y\n1,2,0\n3,4\n", "y", None, false).unwrap_err();
        assert!(
            matches!(e, DataError::Ragged { line: 3, row: 2, expected: 3, found: 2, ref column, .. } if column == "y"),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(m.contains("t.csv") && m.contains("line 3") && m.contains("data row 2"));
        assert!(m.contains("\"y\"") && !m.contains('\n'), "{m}");
        let e = load("a,b,y\n1,2,0,9\n", "y", None, false).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Ragged {
                    line: 2,
                    found: 4,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("extra fields"));
    }

    #[test]
    fn non_numeric_and_empty_cells_name_line_and_column() {
        let e = load("a,b,y\n1,2,0\n3,x4,1\n5,6,0\n", "y", None, false).unwrap_err();
        assert!(
            matches!(e, DataError::NonNumeric { line: 3, row: 2, ref column, ref value, .. } if column == "b" && value == "x4"),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(m.contains("line 3") && m.contains("\"b\"") && m.contains("expected a number"));
        let e = load("a,b,y\n1,,0\n", "y", None, false).unwrap_err();
        assert!(matches!(e, DataError::NonNumeric { line: 2, ref value, .. } if value.is_empty()));
        assert!(e.to_string().contains("an empty cell"));
        // A non-numeric cell in a column that is not used is ignored.
        let f = names(&["a"]);
        let d = load("a,note,y\n1,hello,0\n2,world,1\n", "y", Some(&f), false).unwrap();
        assert_eq!(d.dataset.d(), 1);
    }

    #[test]
    fn nan_and_infinity_are_refused() {
        for bad in ["NaN", "inf", "-infinity", "nan"] {
            let text = format!("a,b,y\n1,2,0\n3,4,1\n5,{bad},0\n");
            let e = load(&text, "y", None, false).unwrap_err();
            assert!(
                matches!(e, DataError::NonFinite { line: 4, row: 3, ref column, .. } if column == "b"),
                "{bad}: {e:?}"
            );
            assert_eq!(
                e.to_string(),
                format!(
                    "t.csv: line 4 (data row 3; the header is line 1), column \"b\": \
                     expected a finite number, found \"{bad}\""
                )
            );
        }
        let e = load("a,y\n1,inf\n2,0\n", "y", None, false).unwrap_err();
        assert!(matches!(e, DataError::NonFinite { line: 2, ref column, .. } if column == "y"));
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<DataError>();
        assert_send_sync::<LoadedData>();
        assert_send_sync::<DataWarning>();
    }

    #[test]
    fn empty_file_and_header_only() {
        let e = load("", "y", None, true).unwrap_err();
        assert!(matches!(e, DataError::Empty { .. }), "{e:?}");
        assert!(e.to_string().starts_with("t.csv: the file is empty"));
        let e = load("a,b,y\n", "y", None, true).unwrap_err();
        assert!(matches!(e, DataError::NoDataRows { .. }), "{e:?}");
        assert!(e.to_string().contains("line 1"));
    }

    #[test]
    fn missing_target_and_unknown_feature_list_the_columns() {
        let e = load(GOOD, "target", None, true).unwrap_err();
        assert!(matches!(e, DataError::MissingTarget { ref target, .. } if target == "target"));
        let m = e.to_string();
        assert!(
            m.contains("\"target\"") && m.contains("\"a\", \"b\", \"y\"") && m.contains("line 1")
        );
        let f = names(&["a", "c"]);
        let e = load(GOOD, "y", Some(&f), true).unwrap_err();
        assert!(matches!(e, DataError::UnknownFeature { ref column, .. } if column == "c"));
        assert!(e.to_string().contains("no feature column \"c\""));
        let f = names(&["a", "y"]);
        let e = load(GOOD, "y", Some(&f), true).unwrap_err();
        assert!(matches!(e, DataError::TargetIsFeature { ref column, .. } if column == "y"));
        let f = names(&["a", "a"]);
        let e = load(GOOD, "y", Some(&f), true).unwrap_err();
        assert!(matches!(e, DataError::DuplicateColumn { ref column, .. } if column == "a"));
        let e = load("a,a,y\n1,2,3\n", "y", None, true).unwrap_err();
        assert!(matches!(e, DataError::DuplicateColumn { ref column, .. } if column == "a"));
    }

    #[test]
    fn constant_column_policy() {
        let text = "a,c,y\n1,7,0\n2,7,1\n3,7,0\n";
        // With an intercept: an error naming the column and its value.
        let e = load(text, "y", None, true).unwrap_err();
        assert!(
            matches!(e, DataError::ConstantColumn { ref column, value, .. } if column == "c" && value == 7.0)
        );
        let m = e.to_string();
        assert!(
            m.contains("\"c\"") && m.contains("every row is 7") && m.contains("--no-intercept")
        );
        // Without: kept, with a warning.
        let d = load(text, "y", None, false).unwrap();
        assert_eq!(d.dataset.d(), 2);
        assert!(
            matches!(d.warnings[..], [DataWarning::ConstantActsAsIntercept { ref column, value }] if column == "c" && value == 7.0)
        );
        // All-zero without intercept: an error.
        let e = load("a,c,y\n1,0,0\n2,0,1\n", "y", None, false).unwrap_err();
        assert!(matches!(e, DataError::ConstantColumn { value, .. } if value == 0.0));
        // Dropping on request.
        let d = load_csv_from_reader(text.as_bytes(), "t.csv", "y", None, DROP_CONSTANT).unwrap();
        assert_eq!(d.features, names(&["a"]));
        assert_eq!(d.dataset.d(), 2);
        assert!(matches!(
            d.warnings[..],
            [DataWarning::DroppedConstant { .. }]
        ));
    }

    #[test]
    fn collinear_columns_are_named_with_their_dependencies() {
        // c = 2a - b exactly.
        let text = "a,b,c,y\n1,0,2,0\n2,1,3,1\n0,3,-3,0\n5,2,8,1\n3,3,3,0\n";
        let e = load(text, "y", None, false).unwrap_err();
        match &e {
            DataError::Collinear {
                column,
                depends_on,
                residual,
                ..
            } => {
                assert_eq!(column, "c");
                assert_eq!(depends_on, &names(&["a", "b"]));
                assert!(*residual < COLLINEAR_TOL, "{residual}");
            }
            other => panic!("expected Collinear, got {other:?}"),
        }
        assert!(e
            .to_string()
            .contains("column \"c\" is an exact linear combination of \"a\", \"b\""));
        // Collinear only modulo the intercept: c = a + 5.
        let text = "a,c,y\n1,6,0\n2,7,1\n4,9,0\n";
        assert!(load(text, "y", None, false).is_ok());
        let e = load(text, "y", None, true).unwrap_err();
        assert!(
            matches!(e, DataError::Collinear { ref column, ref depends_on, .. }
            if column == "c" && depends_on == &names(&["a", "(intercept)"])),
            "{e:?}"
        );
        // A duplicated column.
        let e = load("a,b,y\n1,1,0\n2,2,1\n7,7,0\n", "y", None, true).unwrap_err();
        assert!(
            matches!(e, DataError::Collinear { ref column, ref depends_on, .. }
            if column == "b" && depends_on == &names(&["a"])),
            "{e:?}"
        );
        // Nearly but not exactly collinear is accepted.
        let d = load("a,b,y\n1,1,0\n2,2.001,1\n7,7,0\n", "y", None, true);
        assert!(d.is_ok(), "{d:?}");
    }

    #[test]
    fn first_collinear_agrees_with_an_independent_rank_computation() {
        // Random designs with a planted dependency at a known position: the residual
        // 1 − R² of the named column, recomputed by Gram–Schmidt, is ~0, and every column
        // before it has a residual well above the tolerance.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for trial in 0..20 {
            let p = 2 + trial % 6;
            // Some designs longer than a Gram block of rows, some with an intercept row
            // stored first (skipped).
            let n = if trial % 5 == 0 { 9000 } else { 3 * p + 2 };
            let off = trial % 2;
            let dep = 1 + trial % (p - 1);
            let mut cols: Vec<Vec<f64>> = (0..p)
                .map(|_| (0..n).map(|_| rng.random_range(-3.0..3.0)).collect())
                .collect();
            let w: Vec<f64> = (0..dep).map(|_| rng.random_range(-2.0..2.0)).collect();
            cols[dep] = (0..n)
                .map(|i| (0..dep).map(|k| w[k] * cols[k][i]).sum())
                .collect();
            let design = |cols: &[Vec<f64>]| {
                Mat::from_fn(cols.len() + off, n, |k, i| {
                    if k < off {
                        1.0
                    } else {
                        cols[k - off][i]
                    }
                })
            };
            let j = first_collinear(design(&cols).as_ref(), off, false)
                .expect("planted dependency")
                .column;
            assert_eq!(j, dep, "trial {trial}");
            // Gram–Schmidt residual of each column on the earlier ones.
            let mut basis: Vec<Vec<f64>> = Vec::new();
            for (k, c) in cols.iter().enumerate().take(dep + 1) {
                let norm0 = c.iter().map(|x| x * x).sum::<f64>();
                let mut r = c.clone();
                for b in &basis {
                    let dot: f64 = r.iter().zip(b).map(|(x, y)| x * y).sum();
                    r.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
                }
                let rn = r.iter().map(|x| x * x).sum::<f64>();
                if k < dep {
                    assert!(rn / norm0 > 1e-6);
                    let s = rn.sqrt();
                    basis.push(r.into_iter().map(|x| x / s).collect());
                } else {
                    assert!(rn / norm0 < 1e-20, "{}", rn / norm0);
                }
            }
            assert!(first_collinear(design(&cols[..dep]).as_ref(), off, false).is_none());
        }
    }

    #[test]
    fn too_few_rows() {
        let e = load("a,b,c,y\n1,2,3,0\n4,5,7,1\n", "y", None, true).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::TooFewRows {
                    rows: 2,
                    columns: 4,
                    ..
                }
            ),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(
            m.contains("2 data rows but 4 design columns (3 features + intercept)"),
            "{m}"
        );
    }

    #[test]
    fn io_and_utf8_errors() {
        let e = load_csv("/nonexistent/dir/none.csv", "y", None, true).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }));
        assert!(e
            .to_string()
            .starts_with("/nonexistent/dir/none.csv: cannot read the file"));
        let bytes: &[u8] = b"a,y\n1,0\n\xff\xfe,1\n";
        let e =
            load_csv_from_reader(bytes, "t.csv", "y", None, LoadOptions::default()).unwrap_err();
        assert!(matches!(e, DataError::Parse { line: 3, .. }), "{e:?}");
    }

    #[test]
    fn devices_long_lines_and_nul_bytes_are_not_csv() {
        let e = load_csv("/dev/zero", "y", None, true).unwrap_err();
        assert!(matches!(e, DataError::NotRegularFile { .. }), "{e:?}");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = load_csv(std::env::temp_dir(), "y", None, true).unwrap_err();
        assert!(e.to_string().contains("(a directory)"), "{e}");
        // An endless stream of zeros is refused at its first byte.
        let e = load_csv_from_reader(std::io::repeat(0), "z", "y", None, LoadOptions::default())
            .unwrap_err();
        assert!(matches!(e, DataError::NotCsv { line: 1, .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "z: line 1: not a CSV file: it contains a NUL byte"
        );
        // A line of exactly the limit is read; one byte more on line 3 is refused.
        let cell = "0".repeat(MAX_LINE_BYTES as usize - 2);
        let ok = format!("a,y\n{cell},1\n1,2\n");
        assert!(
            load_csv_from_reader(ok.as_bytes(), "t", "y", None, LoadOptions::default()).is_ok()
        );
        let long = format!("a,y\n1,2\n{cell}9,1\n");
        let e = load_csv_from_reader(long.as_bytes(), "t", "y", None, LoadOptions::default())
            .unwrap_err();
        assert!(matches!(e, DataError::NotCsv { line: 3, .. }), "{e:?}");
        assert!(e.to_string().contains("longer than 1 MiB"), "{e}");
        let e = load_csv_from_reader(
            &b"a,y\n1,2\n3,\x004\n"[..],
            "t",
            "y",
            None,
            LoadOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(e, DataError::NotCsv { line: 3, .. }), "{e:?}");
        // An endless line without NUL bytes is cut at the limit too.
        let e = load_csv_from_reader(
            std::io::repeat(b'1'),
            "t",
            "y",
            None,
            LoadOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(e, DataError::NotCsv { line: 1, .. }), "{e:?}");
    }

    #[test]
    fn echoed_cells_and_names_are_clipped() {
        assert_eq!(clip("short"), "short");
        assert_eq!(clip("a\nb\t"), "a\\nb\\t");
        let big = "x".repeat(10_000);
        let c = clip(&big);
        assert_eq!(
            c.chars().count(),
            MAX_ECHO_CHARS - 3 + 1 + " (10000 bytes)".len()
        );
        assert!(c.ends_with("… (10000 bytes)"), "{c}");
        // Multi-byte characters are cut on character boundaries.
        assert!(clip(&"é".repeat(100)).starts_with(&"é".repeat(77)));
        let text = format!("a,y\n{big},1\n");
        let e = load("a,y\n1,0\n".replace('1', &big).as_str(), "y", None, true).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
        let e = load(&text, "y", None, true).unwrap_err();
        assert!(matches!(e, DataError::NonNumeric { .. }));
        assert!(e.to_string().len() < 300, "{e}");
        let e = load(&format!("{big},y\n1,0\n"), "zz", None, true).unwrap_err();
        assert!(matches!(e, DataError::MissingTarget { .. }));
        assert!(e.to_string().len() < 300, "{e}");
    }

    #[test]
    fn out_of_scale_columns_and_constant_targets_are_named() {
        let e = load("a,b,y\n1,2,0\n2,1e300,1\n3,5,0\n4,1,2\n", "y", None, true).unwrap_err();
        assert!(
            matches!(e, DataError::BadScale { line: 3, row: 2, ref column, value, .. } if column == "b" && value == 1e300),
            "{e:?}"
        );
        assert!(e.to_string().contains("its square overflows"), "{e}");
        let e = load(
            "a,b,y\n1,2e-300,0\n2,1e-300,1\n3,5e-301,0\n4,1e-301,2\n",
            "y",
            None,
            true,
        )
        .unwrap_err();
        assert!(
            matches!(e, DataError::BadScale { line: 2, ref column, .. } if column == "b"),
            "{e:?}"
        );
        assert!(e.to_string().contains("underflows"), "{e}");
        // The target too, and just inside the bounds is fine.
        let e = load("a,y\n1,0\n2,1e200\n3,0\n", "y", None, true).unwrap_err();
        assert!(
            matches!(e, DataError::BadScale { ref column, .. } if column == "y"),
            "{e:?}"
        );
        assert!(load("a,y\n1,0\n2,1e150\n3,1e-150\n", "y", None, true).is_ok());
        let e = check_target_varies(&load("a,y\n1,3\n2,3\n3,3\n", "y", None, true).unwrap())
            .unwrap_err();
        assert!(
            matches!(e, DataError::ConstantTarget { value, .. } if value == 3.0),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("target column \"y\" is constant"),
            "{e}"
        );
    }

    #[test]
    fn a_wide_header_costs_the_columns_used() {
        // 100 000 columns, two of them used: linear in the header (hash-set duplicate
        // check), only the selected cells parsed.
        let w = 100_000;
        let header: Vec<String> = (0..w).map(|j| format!("c{j}")).collect();
        let mut text = header.join(",") + "\n";
        for i in 0..5 {
            let row: Vec<String> = (0..w).map(|j| ((i * 7 + j * 3) % 11).to_string()).collect();
            text += &(row.join(",") + "\n");
        }
        let t = std::time::Instant::now();
        let d = load(&text, "c5", Some(&names(&["c1", "c2"])), true).unwrap();
        assert_eq!(d.features, names(&["c1", "c2"]));
        assert!(t.elapsed().as_secs_f64() < 2.0, "{:?}", t.elapsed());
        let e = load(
            &format!("{}\n1\n", "a,".repeat(50_000) + "a"),
            "a",
            None,
            true,
        )
        .unwrap_err();
        assert!(matches!(e, DataError::DuplicateColumn { .. }), "{e:?}");
    }

    #[test]
    fn files_on_disk_and_the_shipped_data() {
        let path =
            std::env::temp_dir().join(format!("mdem-data-csv-{}-good.csv", std::process::id()));
        std::fs::write(&path, GOOD).unwrap();
        let d = load_csv(&path, "y", None, true);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(d.unwrap().dataset.n(), 4);

        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
        let d = load_csv(data.join("diabetes.csv"), "y", None, true).unwrap();
        assert_eq!((d.dataset.n(), d.dataset.d()), (442, 11));
        assert_eq!(
            d.dataset.x(0),
            &[1.0, 59.0, 2.0, 32.1, 101.0, 157.0, 93.2, 38.0, 4.0, 4.8598, 87.0]
        );
        let d = load_csv(data.join("breast_cancer.csv"), "y", None, true).unwrap();
        assert_eq!((d.dataset.n(), d.dataset.d()), (569, 31));
        // Digits: three all-zero pixels are refused with an intercept, dropped on request.
        let e = load_csv(data.join("digits.csv"), "y", None, true).unwrap_err();
        assert!(matches!(e, DataError::ConstantColumn { ref column, .. } if column == "p0"));
        let d = load_csv_with(data.join("digits.csv"), "y", None, DROP_CONSTANT).unwrap();
        assert_eq!((d.dataset.n(), d.dataset.d()), (1797, 62));
        assert_eq!(d.warnings.len(), 3);
    }
}

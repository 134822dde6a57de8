//! Parquet input: the numeric columns of a Parquet file, a row group at a time, handed to
//! the same sink as the CSV reader's blocks (`read_parquet_rows`), so a
//! [`FileSource`](super::source::FileSource) reads either format (chosen by the
//! `.parquet` extension) with the same checks and messages. Columns of type `DOUBLE`,
//! `FLOAT`, `INT32` and `INT64` are read as `f64`; nulls, non-finite values and columns of
//! other types are errors naming the file, the row and the column. Compression: none or
//! Snappy (the default of pandas and pyarrow).

use super::csv::{DataError, Parsed};
use parquet::column::reader::ColumnReader;
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::path::Path;

/// Whether `path` names a Parquet file (by its extension).
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

fn error(file: &str, what: String) -> DataError {
    DataError::Io {
        file: file.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what),
    }
}

/// Reads the column names, lets `select` pick columns (by index), then hands each row
/// group's selected values to `sink` as one [`Parsed`] block whose "lines" are the data
/// rows' 1-based numbers + 1 (as if the header were line 1, so CSV and Parquet messages
/// count rows alike). Returns the column names.
///
/// # Errors
/// [`DataError::Io`] for a file that cannot be opened or is not Parquet, a nested or
/// non-numeric selected column, a null or non-finite value (naming the row and column);
/// `select`'s and `sink`'s errors; [`DataError::NoDataRows`] for no rows.
pub(crate) fn read_parquet_rows<E: From<DataError>>(
    path: &Path,
    select: impl FnOnce(&[String]) -> Result<Vec<usize>, DataError>,
    mut sink: impl FnMut(Parsed) -> Result<(), E>,
) -> Result<Vec<String>, E> {
    let file = path.display().to_string();
    // A FIFO or device would block or never end: only regular files.
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) && path.exists() {
        return Err(error(&file, "not a regular file; expected a Parquet file".into()).into());
    }
    let f = std::fs::File::open(path).map_err(|source| DataError::Io {
        file: file.clone(),
        source,
    })?;
    let reader = SerializedFileReader::new(f)
        .map_err(|e| error(&file, format!("not a Parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let names: Vec<String> = (0..schema.num_columns())
        .map(|j| schema.column(j).path().string())
        .collect();
    let chosen = select(&names)?;
    for &j in &chosen {
        let c = schema.column(j);
        if c.max_rep_level() > 0 {
            return Err(error(
                &file,
                format!(
                    "column \"{}\" is nested (a list); expected numbers",
                    names[j]
                ),
            )
            .into());
        }
    }
    let mut done = 0usize;
    for g in 0..reader.num_row_groups() {
        let group = reader
            .get_row_group(g)
            .map_err(|e| error(&file, format!("row group {g}: {e}")))?;
        let rows = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
        let mut values = Vec::with_capacity(chosen.len());
        for &j in &chosen {
            let col = group
                .get_column_reader(j)
                .map_err(|e| error(&file, format!("column \"{}\": {e}", names[j])))?;
            let max_def = schema.column(j).max_def_level();
            let v = read_column(col, rows, max_def).map_err(|(row, what)| match row {
                Some(r) => error(
                    &file,
                    format!(
                        "row {} (data row {}), column \"{}\": {what}",
                        done + r + 2,
                        done + r + 1,
                        names[j]
                    ),
                ),
                None => error(&file, format!("column \"{}\": {what}", names[j])),
            })?;
            values.push(v);
        }
        let lines = (0..rows).map(|i| (done + i + 2) as u64).collect();
        done += rows;
        sink(Parsed {
            values,
            lines,
            bytes: 0,
        })?;
    }
    if done == 0 {
        return Err(DataError::NoDataRows { file }.into());
    }
    Ok(names)
}

/// The `rows` values of one column chunk as `f64`; the error names the 0-based row
/// within the group (when there is one) and what is wrong.
fn read_column(
    col: ColumnReader,
    rows: usize,
    max_def: i16,
) -> Result<Vec<f64>, (Option<usize>, String)> {
    let mut defs: Vec<i16> = Vec::with_capacity(rows);
    macro_rules! read {
        ($r:expr, $t:ty) => {{
            let mut r = $r;
            let mut v: Vec<$t> = Vec::with_capacity(rows);
            let (mut records, mut levels) = (0, 0);
            while records < rows {
                let (rec, _, lev) = r
                    .read_records(
                        rows - records,
                        (max_def > 0).then_some(&mut defs),
                        None,
                        &mut v,
                    )
                    .map_err(|e| (None, e.to_string()))?;
                if rec == 0 {
                    break;
                }
                records += rec;
                levels += lev;
            }
            let _ = levels;
            if max_def > 0 {
                if let Some(i) = defs.iter().position(|&d| d < max_def) {
                    return Err((Some(i), "null value; expected a number".into()));
                }
            }
            v.into_iter().map(|x| x as f64).collect::<Vec<f64>>()
        }};
    }
    let out: Vec<f64> = match col {
        ColumnReader::DoubleColumnReader(r) => read!(r, f64),
        ColumnReader::FloatColumnReader(r) => read!(r, f32),
        ColumnReader::Int32ColumnReader(r) => read!(r, i32),
        ColumnReader::Int64ColumnReader(r) => read!(r, i64),
        _ => {
            return Err((
                None,
                "not a numeric column (double, float, int32 or int64 expected)".into(),
            ))
        }
    };
    if out.len() != rows {
        return Err((None, format!("{} values for {rows} rows", out.len())));
    }
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err((Some(i), format!("value {} is not a finite number", out[i])));
    }
    Ok(out)
}

/// Loads a Parquet file into memory as [`load_csv`](super::csv::load_csv) loads a CSV
/// file: `target` (none: every selected column is a coordinate of $y$, the Gaussian
/// mixture's layout), `features` (every other column when `None`), an intercept when
/// `intercept`; constant feature columns (with an intercept) and exact collinearity are
/// refused. [`LoadedData::lines`](super::csv::LoadedData::lines) holds each data row's number + 1 (the header counted as
/// line 1, as for CSV).
///
/// # Errors
/// [`MoeError::Source`](crate::MoeError::Source) with the file, row and column.
pub fn load_parquet(
    path: &Path,
    target: Option<&str>,
    features: Option<&[String]>,
    intercept: bool,
) -> crate::Result<super::csv::LoadedData> {
    use super::source::{CsvSpec, FileSource, RowSource};
    let spec = CsvSpec {
        target: target.map(str::to_string),
        features: features.map(<[String]>::to_vec),
        intercept,
        // Every row: the survey's sample is then the data set, checked whole.
        sample_rows: usize::MAX,
        seed: 0,
    };
    let (source, survey) = FileSource::open(path, &spec, usize::MAX)?;
    let names = source.feature_names().to_vec();
    let n = survey.n_rows;
    let features: Vec<String> = if target.is_some() {
        names
            .iter()
            .filter(|c| *c != "(intercept)")
            .cloned()
            .collect()
    } else {
        source.columns().to_vec()
    };
    Ok(super::csv::LoadedData {
        dataset: survey.sample,
        file: path.display().to_string(),
        columns: source.header().to_vec(),
        target: target.unwrap_or_default().to_string(),
        features,
        intercept: intercept && target.is_some(),
        lines: (0..n as u64).map(|i| i + 2).collect(),
        warnings: Vec::new(),
    })
}

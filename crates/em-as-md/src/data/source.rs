//! Row sources: rows read in passes, one chunk of fixed size at a time, for fits whose
//! data do not fit in memory ([`crate::shard`]).
//!
//! A [`RowSource`] hands its rows to a visitor chunk by chunk, in the same order and with
//! the same chunk boundaries on every pass, so the statistics merged from the chunks (in
//! chunk order) are the same numbers on every pass and for every source holding the same
//! rows: [`InMemory`] (a [`Dataset`] cut into chunks), [`FileSource`] (a CSV or Parquet
//! file re-read on every pass, memory bounded by the chunk, checked for changes between
//! passes) and [`Synthetic`] (rows drawn from a mixture on the fly, seeded per chunk, for
//! benchmarks beyond the disk).

use super::blocks::BLOCK_BYTES;
use super::csv::{first_collinear, open_data, pick_columns, read_rows, DataError, Parsed};
use super::csv::{MAX_ABS_VALUE, MIN_SCALE};
use super::parquet::{is_parquet, read_parquet_rows};
use crate::error::{MoeError, Result};
use crate::fit::scaling::Scaling;
use crate::inner::parallel::CHUNK;
use crate::model::mixture::MixtureOfExperts;
use crate::model::ConditionalFamily;
use crate::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Rows per chunk when none is given: 64 fold chunks (131 072 rows), large enough for the
/// threads to share a chunk, small enough that a chunk of 100 columns is ~100 MB.
pub const DEFAULT_CHUNK_ROWS: usize = 64 * CHUNK;

/// Rows read in passes of fixed-size chunks.
pub trait RowSource: Sync {
    /// Design columns $d$ (with the intercept, when there is one).
    fn d(&self) -> usize;
    /// Target columns $q$.
    fn q(&self) -> usize;
    /// Names of the design columns.
    fn feature_names(&self) -> &[String];
    /// Total rows $n$.
    fn n_rows(&self) -> usize;
    /// Rows per chunk (the last chunk may be shorter).
    fn chunk_rows(&self) -> usize;
    /// One pass: `visit(first_row, chunk)` for every chunk in row order, stopping at the
    /// first error (the visitor's, or the source's own).
    ///
    /// # Errors
    /// The visitor's error; [`MoeError::Source`] when the rows cannot be read (a bad
    /// cell, naming the file's line, or a file that changed since the last pass).
    fn for_each_chunk(&self, visit: &mut dyn FnMut(usize, &Dataset) -> Result<()>) -> Result<()>;
}

fn check_chunk_rows(chunk_rows: usize) -> Result<()> {
    if chunk_rows == 0 {
        return Err(MoeError::InvalidParam {
            name: "chunk_rows",
            reason: "at least 1 row per chunk".into(),
        });
    }
    Ok(())
}

/// A [`Dataset`] in memory, visited in chunks of `chunk_rows` rows (a chunk as large as
/// the data is the data itself, uncopied).
#[derive(Debug, Clone, Copy)]
pub struct InMemory<'a> {
    data: &'a Dataset,
    chunk_rows: usize,
}

impl<'a> InMemory<'a> {
    /// `data` in chunks of `chunk_rows`.
    ///
    /// # Errors
    /// `InvalidParam { name: "chunk_rows" }` for 0.
    pub fn new(data: &'a Dataset, chunk_rows: usize) -> Result<Self> {
        check_chunk_rows(chunk_rows)?;
        Ok(InMemory { data, chunk_rows })
    }
}

impl RowSource for InMemory<'_> {
    fn d(&self) -> usize {
        self.data.d()
    }
    fn q(&self) -> usize {
        self.data.q()
    }
    fn feature_names(&self) -> &[String] {
        self.data.feature_names()
    }
    fn n_rows(&self) -> usize {
        self.data.n()
    }
    fn chunk_rows(&self) -> usize {
        self.chunk_rows
    }
    fn for_each_chunk(&self, visit: &mut dyn FnMut(usize, &Dataset) -> Result<()>) -> Result<()> {
        let n = self.data.n();
        if self.chunk_rows >= n {
            return visit(0, self.data);
        }
        let mut rows = Vec::with_capacity(self.chunk_rows);
        for start in (0..n).step_by(self.chunk_rows) {
            rows.clear();
            rows.extend(start..(start + self.chunk_rows).min(n));
            visit(start, &self.data.select(&rows))?;
        }
        Ok(())
    }
}

/// Rows drawn from a mixture of experts on the fly: $x_i = (1, \xi_{i1}, \dots)$ with
/// $\xi_{ij} \sim N(0, 1)$, then $(y_i, z_i)$ from the model at θ
/// ([`MixtureOfExperts::sample`]). Chunk $c$ is drawn from its own seeded stream, one
/// stream per [`CHUNK`] of rows, in parallel: every pass yields the same rows, whatever
/// the thread count, and no row is stored beyond its chunk.
#[derive(Debug, Clone)]
pub struct Synthetic {
    model: MixtureOfExperts,
    theta: Vec<f64>,
    n: usize,
    chunk_rows: usize,
    seed: u64,
    names: Vec<String>,
}

impl Synthetic {
    /// `n` rows from `model` at `theta` (whose design must start with the intercept), in
    /// chunks of `chunk_rows`, seeded by `seed`.
    ///
    /// # Errors
    /// `InvalidParam` for a θ of the wrong length, `n = 0` or `chunk_rows = 0`.
    pub fn new(
        model: MixtureOfExperts,
        theta: Vec<f64>,
        n: usize,
        chunk_rows: usize,
        seed: u64,
    ) -> Result<Self> {
        check_chunk_rows(chunk_rows)?;
        model.check_theta(&theta)?;
        if n == 0 {
            return Err(MoeError::InvalidParam {
                name: "n",
                reason: "at least 1 row".into(),
            });
        }
        let d = model.n_features();
        let names = std::iter::once("(intercept)".to_string())
            .chain((1..d).map(|j| format!("x{j}")))
            .collect();
        Ok(Synthetic {
            model,
            theta,
            n,
            chunk_rows,
            seed,
            names,
        })
    }

    /// Rows `start..end` (a multiple of [`CHUNK`] from `start`, each fold chunk from
    /// stream `start / CHUNK + j`).
    fn draw(&self, start: usize, end: usize) -> Result<Dataset> {
        let (d, q, k) = (self.model.n_features(), self.q(), self.model.n_experts());
        let p = self.model.expert().family().dim();
        let m = end - start;
        // Rows x_i contiguous (the design's storage), one seeded stream per fold chunk.
        let mut xs = vec![0.0; m * d];
        let mut y = vec![0.0; m * q];
        let first = start / CHUNK;
        let parts: Vec<Result<()>> = xs
            .par_chunks_mut(CHUNK * d)
            .zip(y.par_chunks_mut(CHUNK * q))
            .enumerate()
            .map(|(j, (xc, yc))| {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream((first + j) as u64);
                let (mut pi, mut eta) = (vec![0.0; k], vec![0.0; p]);
                for (x, yi) in xc.chunks_exact_mut(d).zip(yc.chunks_exact_mut(q)) {
                    x[0] = 1.0;
                    for v in x[1..].iter_mut() {
                        *v = StandardNormal.sample(&mut rng);
                    }
                    self.model
                        .sample_into(&self.theta, x, &mut rng, &mut pi, &mut eta, yi)?;
                }
                Ok(())
            })
            .collect();
        parts.into_iter().collect::<Result<()>>()?;
        Dataset::from_design(xs, y, q, self.names.clone())
    }
}

impl RowSource for Synthetic {
    fn d(&self) -> usize {
        self.model.n_features()
    }
    fn q(&self) -> usize {
        self.model.expert().family().obs_dim()
    }
    fn feature_names(&self) -> &[String] {
        &self.names
    }
    fn n_rows(&self) -> usize {
        self.n
    }
    fn chunk_rows(&self) -> usize {
        self.chunk_rows
    }
    fn for_each_chunk(&self, visit: &mut dyn FnMut(usize, &Dataset) -> Result<()>) -> Result<()> {
        // Chunks start on fold-chunk boundaries so the streams do not depend on the
        // chunk size.
        let step = self.chunk_rows.div_ceil(CHUNK) * CHUNK;
        for start in (0..self.n).step_by(step) {
            let chunk = self.draw(start, (start + step).min(self.n))?;
            visit(start, &chunk)?;
        }
        Ok(())
    }
}

/// Which columns of a CSV file a [`FileSource`] reads, as `mdem fit` selects them.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvSpec {
    /// The target column (`None`: no target, every selected column is a coordinate of
    /// $y$ and the design is the intercept alone, as for a Gaussian mixture).
    pub target: Option<String>,
    /// Feature columns (every other column when `None`).
    pub features: Option<Vec<String>>,
    /// Prepend an intercept column.
    pub intercept: bool,
    /// Rows kept in the survey's sample ([`Survey::sample`]).
    pub sample_rows: usize,
    /// Seed of the sample.
    pub seed: u64,
}

/// What one pass over a [`FileSource`] learns before any fit: the row count, the design
/// columns' moments (for standardisation) and a uniform random sample of rows (for
/// starting values), drawn by reservoir sampling with a seeded generator.
#[derive(Debug, Clone)]
pub struct Survey {
    /// Data rows.
    pub n_rows: usize,
    /// Standardisation of the design columns from their moments over all rows
    /// ([`Scaling::from_moments`]).
    pub scaling: Scaling,
    /// Up to [`CsvSpec::sample_rows`] rows, unstandardised, in file order.
    pub sample: Dataset,
}

/// What identifies a file's version between passes: its size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
}

impl Fingerprint {
    fn of(path: &Path) -> Result<Self> {
        let m = std::fs::metadata(path).map_err(|e| {
            MoeError::Source(format!("{}: cannot read the file: {e}", path.display()))
        })?;
        Ok(Fingerprint {
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}

/// A data file read again on every pass, `chunk_rows` rows at a time, optionally
/// standardised chunk by chunk: CSV (parsed in parallel, as
/// [`load_csv`](super::csv::load_csv) reads) or, by its `.parquet` extension, Parquet (a
/// row group at a time, [`super::parquet`]). Peak memory is a few chunks and parse
/// blocks (or one row group), whatever the file's size.
///
/// The file must not change while a fit reads it: its size and modification time are
/// recorded by [`FileSource::open`] and checked before and after every pass, and a pass
/// that sees a different row count is refused too ([`MoeError::Source`], naming the
/// file).
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    file: String,
    /// Selected columns in file order of selection: features then (when any) the target.
    columns: Vec<usize>,
    /// Whether the spec has a target column (else the columns are $y$).
    has_target: bool,
    /// Every column of the file, in file order.
    header: Vec<String>,
    /// Names of the selected columns, in selection order.
    selected: Vec<String>,
    intercept: bool,
    names: Vec<String>,
    n_rows: usize,
    chunk_rows: usize,
    fingerprint: Fingerprint,
    scaling: Option<Scaling>,
}

impl FileSource {
    /// Opens `path` (a regular file: a stream cannot be read twice) and surveys it in
    /// one pass: header and columns as `spec` selects them, every cell checked as
    /// [`load_csv`](super::csv::load_csv) checks it, the row count, the columns' moments
    /// and the sample. Constant columns (with an intercept) and exact collinearity (on the
    /// sample) are refused as `load_csv` refuses them.
    ///
    /// # Errors
    /// [`MoeError::Source`] with the message of the [`DataError`] (file, line, column);
    /// `InvalidParam` for `chunk_rows = 0` or `sample_rows = 0`.
    pub fn open(path: &Path, spec: &CsvSpec, chunk_rows: usize) -> Result<(FileSource, Survey)> {
        check_chunk_rows(chunk_rows)?;
        if spec.sample_rows == 0 {
            return Err(MoeError::InvalidParam {
                name: "sample_rows",
                reason: "at least 1 row".into(),
            });
        }
        let file = path.display().to_string();
        if file == "-" {
            return Err(MoeError::Source(
                "-: standard input cannot be read in passes; give a file".into(),
            ));
        }
        let fingerprint = Fingerprint::of(path)?;
        let mut source = FileSource {
            path: path.to_path_buf(),
            file: file.clone(),
            columns: Vec::new(),
            has_target: spec.target.is_some(),
            header: Vec::new(),
            selected: Vec::new(),
            intercept: spec.intercept,
            names: Vec::new(),
            n_rows: 0,
            chunk_rows,
            fingerprint,
            scaling: None,
        };
        let mut chosen: Vec<usize> = Vec::new();
        let mut header = Vec::new();
        let select = |h: &[String]| -> std::result::Result<Vec<usize>, DataError> {
            header = h.to_vec();
            chosen = match &spec.target {
                Some(t) => {
                    let (tc, fc) = pick_columns(h, &file, t, spec.features.as_deref())?;
                    fc.into_iter().chain([tc]).collect()
                }
                None => match &spec.features {
                    None => (0..h.len()).collect(),
                    Some(names) => names
                        .iter()
                        .map(|n| {
                            h.iter()
                                .position(|c| c == n)
                                .ok_or_else(|| DataError::UnknownFeature {
                                    file: file.clone(),
                                    column: n.clone(),
                                    available: h.to_vec(),
                                })
                        })
                        .collect::<std::result::Result<_, _>>()?,
                },
            };
            Ok(chosen.clone())
        };
        // The survey: moments merged per block (Chan et al.), reservoir sample.
        let mut moments: Option<Moments> = None;
        let mut sample = Reservoir::new(spec.sample_rows, spec.seed);
        let mut seen = 0usize;
        // Per selected column, the first largest magnitude: (line, data row, value).
        let mut largest: Vec<(u64, usize, f64)> = Vec::new();
        read_file(path, &file, select, |c: Parsed| {
            let m = c.lines.len();
            let cols = &c.values;
            largest.resize(cols.len(), (0, 0, 0.0));
            for (big, col) in largest.iter_mut().zip(cols) {
                for (i, v) in col.iter().enumerate() {
                    if v.abs() > big.2.abs() {
                        *big = (c.lines[i], seen + i + 1, *v);
                    }
                }
            }
            let design = source_design_width(cols.len(), spec.target.is_some(), spec.intercept);
            let mut block = Moments::zeros(design);
            let (mut row, mut x) = (vec![0.0; cols.len()], Vec::with_capacity(design));
            for i in 0..m {
                for (r, col) in row.iter_mut().zip(cols) {
                    *r = col[i];
                }
                design_row(&row, spec.target.is_some(), spec.intercept, &mut x);
                block.push(&x);
                sample.offer(seen + i, &row);
            }
            seen += m;
            match moments.as_mut() {
                Some(all) => all.merge(&block),
                None => moments = Some(block),
            }
            Ok::<(), DataError>(())
        })
        .map_err(source_error)?;
        let moments = moments.ok_or_else(|| MoeError::Source(format!("{file}: no data rows")))?;
        source.columns = chosen;
        source.selected = source.columns.iter().map(|&j| header[j].clone()).collect();
        // Out of scale, as the CSV loader refuses it: squares that overflow or underflow.
        for (&(line, row, value), column) in largest.iter().zip(&source.selected) {
            let m = value.abs();
            if m > MAX_ABS_VALUE || (m > 0.0 && m < MIN_SCALE) {
                return Err(source_error(DataError::BadScale {
                    file,
                    line,
                    row,
                    column: column.clone(),
                    value,
                }));
            }
        }
        source.header = header.clone();
        let n_selected = source.columns.len();
        let feature_names: Vec<String> = if spec.target.is_some() {
            source.columns[..n_selected - 1]
                .iter()
                .map(|&j| header[j].clone())
                .collect()
        } else {
            Vec::new()
        };
        source.names = std::iter::once("(intercept)".to_string())
            .filter(|_| spec.intercept || spec.target.is_none())
            .chain(feature_names)
            .collect();
        source.n_rows = seen;
        let scaling = Scaling::from_moments(&moments.mean, &moments.var(), spec.intercept);
        // Constant columns, as load_csv refuses them with an intercept.
        let off = usize::from(spec.intercept);
        if spec.target.is_some() && spec.intercept && seen > 1 {
            for (j, v) in moments.var().iter().enumerate().skip(off) {
                if *v == 0.0 {
                    return Err(MoeError::Source(format!(
                        "{file}: column \"{}\" is constant ({}); with an intercept it is \
                         redundant; leave it out with --features",
                        source.names[j], moments.mean[j]
                    )));
                }
            }
        }
        let sample = source.dataset(&sample.rows())?;
        if spec.target.is_some() {
            if let Some(dep) = first_collinear(sample.xt(), off, spec.intercept) {
                return Err(MoeError::Source(format!(
                    "{file}: column \"{}\" is an exact linear combination of earlier columns \
                     (found on a sample of {} rows)",
                    source.names[dep.column + off],
                    sample.n()
                )));
            }
        }
        Ok((
            source,
            Survey {
                n_rows: seen,
                scaling,
                sample,
            },
        ))
    }

    /// Every column of the file, in file order.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The selected columns' names: the features then the target, or the coordinates
    /// of $y$ without a target.
    pub fn columns(&self) -> &[String] {
        &self.selected
    }

    /// The same source with every chunk standardised by `scaling` (as
    /// [`Scaling::apply_in_place`]) before it is visited.
    ///
    /// # Errors
    /// `InvalidData` when the scaling's width differs from the design's.
    pub fn standardised(mut self, scaling: Scaling) -> Result<Self> {
        if scaling.mean.len() != self.d() {
            return Err(MoeError::InvalidData {
                row: None,
                column: None,
                reason: format!(
                    "standardisation has {} columns, data {}",
                    scaling.mean.len(),
                    self.d()
                ),
            });
        }
        self.scaling = Some(scaling);
        Ok(self)
    }

    /// The data set of the rows in `cells` (row after row, each the selected cells in
    /// selection order).
    fn dataset(&self, cells: &[f64]) -> Result<Dataset> {
        let (d, q) = (self.d(), self.q());
        let width = self.columns.len().max(1);
        let m = cells.len() / width;
        let mut xt = vec![0.0; d * m];
        let mut y = Vec::with_capacity(m * q);
        let mut x = Vec::with_capacity(d);
        for (i, r) in cells.chunks_exact(width).enumerate() {
            design_row(r, self.has_target, self.intercept, &mut x);
            xt[i * d..i * d + x.len()].copy_from_slice(&x);
            if self.has_target {
                y.push(r[r.len() - 1]);
            } else {
                y.extend_from_slice(r);
            }
        }
        Dataset::from_design(xt, y, q, self.names.clone())
    }

    /// Builds chunk datasets from parsed blocks and visits them; `pending` holds the
    /// rows of the chunk being filled (selected columns) and their lines.
    fn emit(
        &self,
        pending: &mut (Vec<Vec<f64>>, Vec<u64>),
        first_row: usize,
        visit: &mut dyn FnMut(usize, &Dataset) -> Result<()>,
    ) -> Result<()> {
        let m = pending.1.len();
        let (d, q) = (self.d(), self.q());
        let ncols = pending.0.len();
        let off = usize::from(self.intercept || !self.has_target);
        let mut xt = vec![0.0; d * m];
        let mut y = Vec::with_capacity(m * q);
        for i in 0..m {
            let col = &mut xt[i * d..(i + 1) * d];
            if off == 1 {
                col[0] = 1.0;
            }
            if self.has_target {
                for a in 0..ncols - 1 {
                    col[a + off] = pending.0[a][i];
                }
                y.push(pending.0[ncols - 1][i]);
            } else {
                y.extend(pending.0.iter().map(|c| c[i]));
            }
        }
        let mut chunk = Dataset::from_design(xt, y, q, self.names.clone())?;
        if let Some(s) = &self.scaling {
            s.apply_in_place(&mut chunk)?;
        }
        let lines = std::mem::take(&mut pending.1);
        pending.0.iter_mut().for_each(Vec::clear);
        visit(first_row, &chunk).map_err(|e| self.at_line(e, first_row, &lines))?;
        pending.1 = lines;
        pending.1.clear();
        Ok(())
    }

    /// An error about chunk row `r` (`InvalidData { row: Some(r) }`) named by its line
    /// in the file.
    fn at_line(&self, e: MoeError, first_row: usize, lines: &[u64]) -> MoeError {
        match e {
            MoeError::InvalidData {
                row: Some(r),
                column,
                reason,
            } => {
                let line = lines.get(r).copied().unwrap_or(0);
                let column = column.map_or(String::new(), |c| format!(", column \"{c}\""));
                let row = first_row + r + 1;
                MoeError::Source(if is_parquet(&self.path) {
                    format!("{}: data row {row}{column}: {reason}", self.file)
                } else {
                    format!(
                        "{}: line {line} (data row {row}){column}: {reason}",
                        self.file
                    )
                })
            }
            e => e,
        }
    }

    fn check_unchanged(&self) -> Result<()> {
        if Fingerprint::of(&self.path)? != self.fingerprint {
            return Err(MoeError::Source(format!(
                "{}: the file changed while it was being read in passes (size or \
                 modification time differs from the first pass); the fit stopped",
                self.file
            )));
        }
        Ok(())
    }
}

impl RowSource for FileSource {
    fn d(&self) -> usize {
        self.names.len()
    }
    fn q(&self) -> usize {
        if self.has_target {
            1
        } else {
            self.columns.len()
        }
    }
    fn feature_names(&self) -> &[String] {
        &self.names
    }
    fn n_rows(&self) -> usize {
        self.n_rows
    }
    fn chunk_rows(&self) -> usize {
        self.chunk_rows
    }
    fn for_each_chunk(&self, visit: &mut dyn FnMut(usize, &Dataset) -> Result<()>) -> Result<()> {
        self.check_unchanged()?;
        let columns = self.columns.clone();
        let width = columns.len();
        let mut pending: (Vec<Vec<f64>>, Vec<u64>) = (
            (0..width)
                .map(|_| Vec::with_capacity(self.chunk_rows))
                .collect(),
            Vec::with_capacity(self.chunk_rows),
        );
        let mut done = 0usize;
        let file = self.file.clone();
        let select = move |h: &[String]| -> std::result::Result<Vec<usize>, DataError> {
            // A narrower header means the file was replaced (the fingerprint usually says
            // so first).
            match columns.iter().find(|&&j| j >= h.len()) {
                Some(j) => Err(DataError::UnknownFeature {
                    file,
                    column: format!("(column {})", j + 1),
                    available: h.to_vec(),
                }),
                None => Ok(columns),
            }
        };
        read_file(&self.path, &self.file, select, |c: Parsed| {
            let mut from = 0;
            let m = c.lines.len();
            while from < m {
                let take = (self.chunk_rows - pending.1.len()).min(m - from);
                for (p, v) in pending.0.iter_mut().zip(&c.values) {
                    p.extend_from_slice(&v[from..from + take]);
                }
                pending.1.extend_from_slice(&c.lines[from..from + take]);
                from += take;
                if pending.1.len() == self.chunk_rows {
                    self.emit(&mut pending, done, visit)?;
                    done += self.chunk_rows;
                }
            }
            Ok::<(), MoeError>(())
        })?;
        if !pending.1.is_empty() {
            let m = pending.1.len();
            self.emit(&mut pending, done, visit)?;
            done += m;
        }
        self.check_unchanged()?;
        if done != self.n_rows {
            return Err(MoeError::Source(format!(
                "{}: {done} data rows in this pass, {} in the first: the file changed while \
                 it was being read",
                self.file, self.n_rows
            )));
        }
        Ok(())
    }
}

/// One pass over a data file, CSV or (by its `.parquet` extension) Parquet: the header,
/// `select`'s columns, then the selected values block by block to `sink`.
fn read_file<E: From<DataError>>(
    path: &Path,
    file: &str,
    select: impl FnOnce(&[String]) -> std::result::Result<Vec<usize>, DataError>,
    sink: impl FnMut(Parsed) -> std::result::Result<(), E>,
) -> std::result::Result<Vec<String>, E> {
    if is_parquet(path) {
        read_parquet_rows(path, select, sink)
    } else {
        read_rows(open_data(path)?, file, select, BLOCK_BYTES, sink)
    }
}

impl From<DataError> for MoeError {
    fn from(e: DataError) -> Self {
        source_error(e)
    }
}

fn source_error(e: DataError) -> MoeError {
    MoeError::Source(e.to_string())
}

/// Design width of a source row with `selected` columns.
fn source_design_width(selected: usize, has_target: bool, intercept: bool) -> usize {
    if has_target {
        selected - 1 + usize::from(intercept)
    } else {
        1
    }
}

/// The design row of a row of selected cells into `x`: intercept (when asked, or always
/// without a target: the Gaussian-mixture design) then the features.
fn design_row(row: &[f64], has_target: bool, intercept: bool, x: &mut Vec<f64>) {
    x.clear();
    if has_target {
        x.extend(std::iter::repeat_n(1.0, usize::from(intercept)));
        x.extend_from_slice(&row[..row.len() - 1]);
    } else {
        x.push(1.0);
    }
}

/// Column means and centred sums of squares, merged across blocks with the pairwise
/// update of Chan, Golub & LeVeque (1979):
/// $M_2 = M_2^a + M_2^b + \delta^2 n_an_b/n$, $\delta = \bar x_b - \bar x_a$.
#[derive(Debug, Clone)]
struct Moments {
    n: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl Moments {
    fn zeros(d: usize) -> Self {
        Moments {
            n: 0.0,
            mean: vec![0.0; d],
            m2: vec![0.0; d],
        }
    }
    /// Welford's update with one row.
    fn push(&mut self, x: &[f64]) {
        self.n += 1.0;
        for ((m, s), v) in self.mean.iter_mut().zip(&mut self.m2).zip(x) {
            let delta = v - *m;
            *m += delta / self.n;
            *s += delta * (v - *m);
        }
    }
    fn merge(&mut self, o: &Moments) {
        let n = self.n + o.n;
        if o.n == 0.0 {
            return;
        }
        for j in 0..self.mean.len() {
            let delta = o.mean[j] - self.mean[j];
            self.m2[j] += o.m2[j] + delta * delta * self.n * o.n / n;
            self.mean[j] += delta * o.n / n;
        }
        self.n = n;
    }
    /// Population variances $M_2/n$.
    fn var(&self) -> Vec<f64> {
        self.m2.iter().map(|s| s / self.n).collect()
    }
}

/// Algorithm R (Vitter 1985): after row $i$ the kept rows are a uniform sample of size
/// $\min(S, i+1)$, the same for the same seed. Rows are kept in one flat buffer (no
/// allocation per row: a Parquet file loaded in memory keeps every row here).
struct Reservoir {
    size: usize,
    rng: ChaCha8Rng,
    /// File index of each kept row.
    index: Vec<usize>,
    /// The kept rows' cells, `width` per row, in slot order.
    cells: Vec<f64>,
}

impl Reservoir {
    fn new(size: usize, seed: u64) -> Self {
        Reservoir {
            size,
            rng: ChaCha8Rng::seed_from_u64(seed),
            index: Vec::new(),
            cells: Vec::new(),
        }
    }
    fn offer(&mut self, i: usize, row: &[f64]) {
        if self.index.len() < self.size {
            self.index.push(i);
            self.cells.extend_from_slice(row);
        } else {
            let j = self.rng.random_range(0..=i);
            if j < self.size {
                self.index[j] = i;
                let w = row.len();
                self.cells[j * w..(j + 1) * w].copy_from_slice(row);
            }
        }
    }
    /// The kept rows' cells in file order, row after row.
    fn rows(self) -> Vec<f64> {
        let w = self.cells.len().checked_div(self.index.len()).unwrap_or(0);
        let mut order: Vec<usize> = (0..self.index.len()).collect();
        order.sort_by_key(|&s| self.index[s]);
        let mut out = Vec::with_capacity(self.cells.len());
        for s in order {
            out.extend_from_slice(&self.cells[s * w..(s + 1) * w]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_moments_match_the_two_pass_formulas() {
        let rows: Vec<Vec<f64>> = (0..1000)
            .map(|i| vec![(i as f64 * 0.37).sin() * 1e3 + 5e4, (i as f64).sqrt()])
            .collect();
        let mut parts = Vec::new();
        for block in rows.chunks(137) {
            let mut m = Moments::zeros(2);
            block.iter().for_each(|r| m.push(r));
            parts.push(m);
        }
        let mut all = parts[0].clone();
        parts[1..].iter().for_each(|p| all.merge(p));
        for j in 0..2 {
            let mean: f64 = rows.iter().map(|r| r[j]).sum::<f64>() / 1000.0;
            let var: f64 = rows.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / 1000.0;
            assert!((all.mean[j] - mean).abs() <= 1e-12 * mean.abs());
            assert!((all.var()[j] - var).abs() <= 1e-10 * var);
        }
    }

    #[test]
    fn reservoir_is_uniform_and_seeded() {
        // Each of 20 rows lands in a 5-row sample with probability 1/4; over 4000 seeds
        // the counts are within 5 standard deviations of 1000.
        let mut counts = [0usize; 20];
        for seed in 0..4000 {
            let mut r = Reservoir::new(5, seed);
            for i in 0..20 {
                r.offer(i, &[i as f64]);
            }
            for v in r.rows() {
                counts[v as usize] += 1;
            }
        }
        let sd = (4000.0 * 0.25 * 0.75f64).sqrt();
        for c in counts {
            assert!((c as f64 - 1000.0).abs() < 5.0 * sd, "{counts:?}");
        }
        let draw = |seed| {
            let mut r = Reservoir::new(3, seed);
            (0..50).for_each(|i| r.offer(i, &[i as f64]));
            r.rows()
        };
        assert_eq!(draw(7), draw(7));
    }
}

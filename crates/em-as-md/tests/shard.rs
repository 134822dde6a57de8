//! Shard statistics and EM over row sources: the streamed steps are the in-memory steps
//! (bit for bit with one chunk; to round-off with others), sources with the same rows and
//! chunks agree bit for bit, statistics merge and travel as bytes, and a file that changes
//! or holds a bad cell is refused with its line.

use em_as_md::data::csv::load_csv;
use em_as_md::data::source::{CsvSpec, FileSource, InMemory, RowSource, Synthetic};
use em_as_md::shard::{pass, Round, ShardProblem, ShardStats, Sums};
use em_as_md::solve::executor::Executor;
use em_as_md::{
    Dataset, Em, Expert, Gating, LinearGaussian, Logistic, MixtureOfExperts, MoeError, MoeParams,
    Multinomial, Poisson, Problem, Squarem,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::sync::Arc;

mod common;

/// A model of `k` experts on `d` design columns (intercept first) and a θ drawn for it.
fn model(
    expert: Arc<dyn Expert>,
    k: usize,
    d: usize,
    gating: Gating,
) -> (MixtureOfExperts, Vec<f64>) {
    let m = MixtureOfExperts::new(expert, k, d, gating).unwrap();
    let theta = m.random_params(&mut ChaCha8Rng::seed_from_u64(3), 1.0);
    (m, theta)
}

/// Every row of a source, as one data set.
fn collect(source: &dyn RowSource) -> Dataset {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    source
        .for_each_chunk(&mut |_, c| {
            for i in 0..c.n() {
                x.extend_from_slice(c.x(i));
                y.extend_from_slice(c.y(i));
            }
            Ok(())
        })
        .unwrap();
    Dataset::from_rows(&x, source.d(), &y, source.q())
        .unwrap()
        .with_feature_names(source.feature_names().to_vec())
        .unwrap()
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `iters` EM iterations from `theta0` on rows in memory and on `source`.
fn both(
    m: &MixtureOfExperts,
    data: &Dataset,
    source: &dyn RowSource,
    theta0: &[f64],
    iters: u64,
) -> ((Vec<f64>, f64), (Vec<f64>, f64)) {
    let mem = Executor::new(Problem::new(m, data).unwrap(), Em::new())
        .theta0(theta0.to_vec())
        .max_iters(iters)
        .run()
        .unwrap();
    let st = Executor::new(ShardProblem::new(m, source).unwrap(), Em::new())
        .theta0(theta0.to_vec())
        .max_iters(iters)
        .run()
        .unwrap();
    assert_eq!(mem.state.iter, iters);
    assert_eq!(st.state.iter, iters);
    (
        (mem.state.theta, mem.state.objective),
        (st.state.theta, st.state.objective),
    )
}

#[test]
fn one_chunk_shards_take_the_in_memory_steps_bit_for_bit() {
    // Gated linear (closed-form experts, Newton gate rounds), gated logistic, Poisson and
    // three-class multinomial (Newton expert rounds; the multinomial also with L-BFGS
    // rounds, its M-step above the dense bound), ungated linear (closed form only).
    let cases: Vec<(Arc<dyn Expert>, Gating)> = vec![
        (Arc::new(LinearGaussian::new()), Gating::Softmax),
        (Arc::new(Logistic::new()), Gating::Softmax),
        (Arc::new(Poisson::new()), Gating::Softmax),
        (Arc::new(Multinomial::new(3).unwrap()), Gating::Softmax),
        (
            Arc::new(Multinomial::new(3).unwrap().with_dense_max_params(0)),
            Gating::Softmax,
        ),
        (Arc::new(LinearGaussian::new()), Gating::Constant),
    ];
    for (expert, gating) in cases {
        let (m, truth) = model(expert.clone(), 2, 3, gating);
        let data = collect(&Synthetic::new(m.clone(), truth, 5000, 5000, 11).unwrap());
        let theta0 = m.random_params(&mut ChaCha8Rng::seed_from_u64(5), 0.3);
        let source = InMemory::new(&data, data.n()).unwrap();
        let ((tm, lm), (ts, ls)) = both(&m, &data, &source, &theta0, 8);
        assert_eq!(bits(&tm), bits(&ts), "{} {gating:?}", expert.name());
        assert_eq!(lm.to_bits(), ls.to_bits(), "{} {gating:?}", expert.name());
    }
}

#[test]
fn one_chunk_shards_take_the_ridged_steps_bit_for_bit() {
    // A ridge on the gate and the experts: the shards' Newton rounds and E-step objective
    // carry the same penalty as the in-memory M-step and objective.
    let cases: Vec<Arc<dyn Expert>> = vec![
        Arc::new(Logistic::with_ridge(0.8).unwrap()),
        Arc::new(LinearGaussian::with_ridge(0.8).unwrap()),
    ];
    for expert in cases {
        let (m, truth) = model(expert.clone(), 2, 3, Gating::Softmax);
        let m = m
            .with_gate_config(em_as_md::GateConfig {
                ridge: 0.8,
                ..em_as_md::GateConfig::default()
            })
            .unwrap();
        let data = collect(&Synthetic::new(m.clone(), truth, 3000, 3000, 12).unwrap());
        let theta0 = m.random_params(&mut ChaCha8Rng::seed_from_u64(6), 0.3);
        let source = InMemory::new(&data, data.n()).unwrap();
        let ((tm, lm), (ts, ls)) = both(&m, &data, &source, &theta0, 6);
        assert_eq!(bits(&tm), bits(&ts), "{}", expert.name());
        assert_eq!(lm.to_bits(), ls.to_bits(), "{}", expert.name());
        // The objective both report is the penalised one.
        let p = Problem::new(&m, &data).unwrap();
        let l = p.objective(&tm).unwrap();
        assert!((l - lm).abs() < 1e-12 * l.abs(), "{l} vs {lm}");
        assert!(em_as_md::ConditionalFamily::penalty(&m, &tm) > 0.0);
    }
}

#[test]
fn chunked_shards_agree_with_memory_to_round_off_and_em_is_monotone() {
    let (m, truth) = model(Arc::new(Logistic::new()), 3, 3, Gating::Softmax);
    let data = collect(&Synthetic::new(m.clone(), truth, 9000, 4096, 2).unwrap());
    let theta0 = m.random_params(&mut ChaCha8Rng::seed_from_u64(8), 0.3);
    for chunk in [1000, 2048, 4999] {
        let source = InMemory::new(&data, chunk).unwrap();
        let ((tm, lm), (ts, ls)) = both(&m, &data, &source, &theta0, 10);
        assert!(common::rel_vec(&ts, &tm) < 1e-9, "chunk {chunk}");
        assert!(
            (ls - lm).abs() <= 1e-12 * lm.abs(),
            "chunk {chunk}: {ls} vs {lm}"
        );
    }
    // SQUAREM over shards never increases L (beyond round-off).
    let source = InMemory::new(&data, 3000).unwrap();
    let run = Executor::new(ShardProblem::new(&m, &source).unwrap(), Squarem::new())
        .theta0(theta0)
        .max_iters(15)
        .run()
        .unwrap();
    for w in run.trace.windows(2) {
        assert!(
            w[1].objective <= w[0].objective + 1e-12,
            "{} > {}",
            w[1].objective,
            w[0].objective
        );
    }
}

/// Writes `data` (intercept first) as a CSV with columns x1.., y; `{}` prints the
/// shortest string that reads back to the same f64.
fn write_csv(data: &Dataset, path: &std::path::Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let d = data.d();
    let header: Vec<String> = (1..d)
        .map(|j| format!("x{j}"))
        .chain(["y".into()])
        .collect();
    writeln!(f, "{}", header.join(",")).unwrap();
    for i in 0..data.n() {
        let row: Vec<String> = data.x(i)[1..]
            .iter()
            .chain(data.y(i))
            .map(|v| format!("{v}"))
            .collect();
        writeln!(f, "{}", row.join(",")).unwrap();
    }
}

fn spec() -> CsvSpec {
    CsvSpec {
        target: Some("y".into()),
        features: None,
        intercept: true,
        sample_rows: 500,
        seed: 1,
    }
}

#[test]
fn a_csv_source_and_memory_with_the_same_chunks_agree_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moe.csv");
    let (m, truth) = model(Arc::new(LinearGaussian::new()), 2, 3, Gating::Softmax);
    write_csv(
        &collect(&Synthetic::new(m.clone(), truth, 7000, 7000, 4).unwrap()),
        &path,
    );
    let loaded = load_csv(&path, "y", None, true).unwrap().dataset;
    let (csv, survey) = FileSource::open(&path, &spec(), 1500).unwrap();
    assert_eq!(survey.n_rows, 7000);
    assert_eq!(survey.sample.n(), 500);
    assert_eq!(csv.feature_names(), loaded.feature_names());
    let theta0 = m.random_params(&mut ChaCha8Rng::seed_from_u64(6), 0.3);
    let mem = InMemory::new(&loaded, 1500).unwrap();
    let ((tm, lm), (ts, ls)) = both(&m, &loaded, &csv, &theta0, 6);
    let ((_, _), (ti, li)) = both(&m, &loaded, &mem, &theta0, 6);
    assert_eq!(bits(&ts), bits(&ti));
    assert_eq!(ls.to_bits(), li.to_bits());
    assert!(common::rel_vec(&ts, &tm) < 1e-9);
    assert!((ls - lm).abs() <= 1e-12 * lm.abs());
    // The survey's scaling is the in-memory one (moments merged by blocks).
    let whole = em_as_md::fit::scaling::Scaling::fit(&loaded, true);
    assert!(common::rel_vec(&survey.scaling.mean, &whole.mean) < 1e-12);
    assert!(common::rel_vec(&survey.scaling.sd, &whole.sd) < 1e-12);
}

#[test]
fn a_streamed_fit_reaches_the_in_memory_fit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moe.csv");
    let (m, truth) = model(Arc::new(LinearGaussian::new()), 2, 3, Gating::Softmax);
    write_csv(
        &collect(&Synthetic::new(m.clone(), truth, 20_000, 8192, 9).unwrap()),
        &path,
    );
    let loaded = load_csv(&path, "y", None, true).unwrap().dataset;
    let p = MoeParams::new(2)
        .expert(LinearGaussian::new())
        .tol(1e-12)
        .max_iters(500)
        .n_init(3);
    let p = p.check().unwrap();
    let mem = p.fit(&loaded).unwrap();
    let (csv, survey) = FileSource::open(
        &path,
        &CsvSpec {
            sample_rows: 3000,
            ..spec()
        },
        4096,
    )
    .unwrap();
    let st = p.fit_stream(&csv, &survey.sample).unwrap();
    let (a, b) = (mem.report().log_likelihood, st.report().log_likelihood);
    assert!((a - b).abs() <= 1e-10 * a.abs(), "{a} vs {b}");
    assert!(st.report().converged(), "{:?}", st.report().termination);
    assert!(
        (mem.report().entropy - st.report().entropy).abs()
            < 1e-4 * mem.report().entropy.abs().max(1.0)
    );
}

#[test]
fn shard_statistics_merge_associatively_and_travel_as_bytes() {
    let (m, truth) = model(Arc::new(LinearGaussian::new()), 3, 3, Gating::Softmax);
    let data = collect(&Synthetic::new(m.clone(), truth.clone(), 6000, 6000, 1).unwrap());
    let parts: Vec<Dataset> = [0..1000, 1000..3500, 3500..6000]
        .into_iter()
        .map(|r| data.select(&r.collect::<Vec<_>>()))
        .collect();
    let round = Round::E {
        theta: truth.clone(),
    };
    let s: Vec<ShardStats> = parts
        .iter()
        .map(|p| m.accumulate(&round, p).unwrap())
        .collect();
    let mut left = s[0].clone();
    left.merge(&s[1]).unwrap();
    left.merge(&s[2]).unwrap();
    let mut right = s[1].clone();
    right.merge(&s[2]).unwrap();
    let mut right0 = s[0].clone();
    right0.merge(&right).unwrap();
    let whole = pass(&m, &InMemory::new(&data, data.n()).unwrap(), &round).unwrap();
    assert_eq!(left.rows, 6000);
    for t in [&left, &right0] {
        let (l, w) = (t.objective().unwrap(), whole.objective().unwrap());
        assert!((l - w).abs() <= 1e-13 * w.abs());
        let (Sums::E(a), Sums::E(b)) = (&t.sums, &whole.sums) else {
            panic!("E sums expected")
        };
        assert!(common::rel_vec(&a.weight, &b.weight) < 1e-12);
        let (la, lb) = (a.linear.as_ref().unwrap(), b.linear.as_ref().unwrap());
        assert!(common::rel_vec(&la.0, &lb.0) < 1e-12);
        let (ga, gb) = (a.gate.as_ref().unwrap(), b.gate.as_ref().unwrap());
        assert!(common::rel_vec(&ga.4, &gb.4) < 1e-12);
    }
    // Bytes round-trip exactly; a Newton round too.
    let bytes = left.to_bytes().unwrap();
    assert_eq!(ShardStats::from_bytes(&bytes).unwrap(), left);
    let g = Round::Gate {
        theta: truth.clone(),
        w: truth[..6].to_vec(),
        hessian: true,
    };
    assert_eq!(Round::from_bytes(&g.to_bytes().unwrap()).unwrap(), g);
    let gs = m.accumulate(&g, &parts[0]).unwrap();
    assert_eq!(ShardStats::from_bytes(&gs.to_bytes().unwrap()).unwrap(), gs);
    // Different rounds do not merge; foreign bytes are refused with the reason.
    assert!(matches!(
        left.clone().merge(&gs),
        Err(MoeError::InvalidParam { name: "stats", .. })
    ));
    let e = ShardStats::from_bytes(b"not cbor").unwrap_err();
    assert!(e.to_string().contains("mdem-shard"), "{e}");
}

#[test]
fn a_file_that_changes_between_passes_stops_the_fit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moe.csv");
    let (m, truth) = model(Arc::new(LinearGaussian::new()), 2, 3, Gating::Constant);
    write_csv(
        &collect(&Synthetic::new(m.clone(), truth.clone(), 3000, 3000, 4).unwrap()),
        &path,
    );
    let (csv, _) = FileSource::open(&path, &spec(), 1000).unwrap();
    assert!(pass(
        &m,
        &csv,
        &Round::E {
            theta: truth.clone()
        }
    )
    .is_ok());
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"0.5,0.5,1.0\n")
        .unwrap();
    let e = pass(&m, &csv, &Round::E { theta: truth }).unwrap_err();
    assert!(matches!(e, MoeError::Source(_)), "{e:?}");
    assert!(e.to_string().contains("changed"), "{e}");
}

#[test]
fn bad_cells_and_bad_targets_name_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    // Row i is on line i + 2; `bad(i)` gives row i the cell `cell` as its target.
    let csv = |bad: Option<(usize, &str)>| {
        let mut text = String::from("x1,y\n");
        for i in 0..600 {
            let y = match bad {
                Some((j, cell)) if j == i => cell.to_string(),
                _ => (i % 2).to_string(),
            };
            text.push_str(&format!("{},{y}\n", i as f64 * 0.01));
        }
        text
    };
    std::fs::write(&path, csv(Some((300, "oops")))).unwrap();
    let e = FileSource::open(&path, &spec(), 100).unwrap_err();
    assert!(e.to_string().contains("line 302"), "{e}");
    // A target outside the logistic support, found in a later pass, names its line.
    std::fs::write(&path, csv(Some((400, "2")))).unwrap();
    let (src, _) = FileSource::open(&path, &spec(), 100).unwrap();
    let (m, theta) = model(Arc::new(Logistic::new()), 2, 2, Gating::Softmax);
    let e = pass(&m, &src, &Round::E { theta }).unwrap_err();
    assert!(e.to_string().contains("line 402"), "{e}");
    // Out-of-scale cells, as the CSV loader refuses them: the survey names the largest
    // one's line and column (a feature whose square overflows, a target column too
    // small for its square).
    std::fs::write(&path, csv(None).replace("\n2.5,", "\n1e200,")).unwrap();
    let e = FileSource::open(&path, &spec(), 100)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 252") && e.contains("\"x1\"") && e.contains("overflows"),
        "{e}"
    );
    let tiny: String = std::iter::once("x1,y\n".to_string())
        .chain((0..50).map(|i| format!("{i},{}\n", if i == 7 { "3e-200" } else { "0" })))
        .collect();
    std::fs::write(&path, tiny).unwrap();
    let e = FileSource::open(&path, &spec(), 100)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 9") && e.contains("\"y\"") && e.contains("underflows"),
        "{e}"
    );
}

#[test]
fn a_users_expert_gets_shards_through_the_trait() {
    // The plug-in Gamma expert of examples/gamma-expert: no code of its own for shards.
    let gamma: Arc<dyn Expert> = Arc::new(common::gamma::gamma_expert().unwrap());
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let n = 4000;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..n {
        let xi: f64 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng);
        let scale = if i % 3 == 0 {
            (0.5 + 0.4 * xi).exp()
        } else {
            (-0.3 * xi).exp() * 4.0
        };
        let e: f64 = rand_distr::Distribution::sample(&rand_distr::Exp1, &mut rng);
        x.extend([1.0, xi]);
        y.push(scale * (e + 0.05));
    }
    let data = Dataset::from_rows(&x, 2, &y, 1).unwrap();
    let fitted = MoeParams::new(2)
        .expert_shared(gamma)
        .max_iters(5)
        .n_init(1)
        .check()
        .unwrap()
        .fit(&data)
        .unwrap();
    let (m, theta0) = (fitted.model().clone(), fitted.theta().to_vec());
    let one = InMemory::new(&data, n).unwrap();
    let ((tm, lm), (ts, ls)) = both(&m, &data, &one, &theta0, 4);
    assert_eq!(bits(&tm), bits(&ts));
    assert_eq!(lm.to_bits(), ls.to_bits());
    let chunked = InMemory::new(&data, 900).unwrap();
    let ((_, _), (tc, lc)) = both(&m, &data, &chunked, &theta0, 4);
    assert!(common::rel_vec(&tc, &tm) < 1e-8);
    assert!((lc - lm).abs() <= 1e-12 * lm.abs());
}

/// Writes `data` (intercept first) as Parquet with DOUBLE columns x1.., y in row groups
/// of `group` rows; `null_at` makes that row's y null (an OPTIONAL column).
fn write_parquet(data: &Dataset, path: &std::path::Path, group: usize, null_at: Option<usize>) {
    use parquet::data_type::DoubleType;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    let d = data.d();
    let fields: String = (1..d)
        .map(|j| format!("REQUIRED DOUBLE x{j}; "))
        .chain([format!(
            "{} DOUBLE y;",
            if null_at.is_some() {
                "OPTIONAL"
            } else {
                "REQUIRED"
            }
        )])
        .collect();
    let schema = Arc::new(parse_message_type(&format!("message m {{ {fields} }}")).unwrap());
    let props = Arc::new(WriterProperties::builder().build());
    let file = std::fs::File::create(path).unwrap();
    let mut w = SerializedFileWriter::new(file, schema, props).unwrap();
    for start in (0..data.n()).step_by(group) {
        let rows: Vec<usize> = (start..(start + group).min(data.n())).collect();
        let mut rg = w.next_row_group().unwrap();
        let mut j = 1;
        while let Some(mut col) = rg.next_column().unwrap() {
            if j < d {
                let v: Vec<f64> = rows.iter().map(|&i| data.x(i)[j]).collect();
                col.typed::<DoubleType>()
                    .write_batch(&v, None, None)
                    .unwrap();
            } else {
                let keep: Vec<usize> = rows
                    .iter()
                    .copied()
                    .filter(|&i| Some(i) != null_at)
                    .collect();
                let v: Vec<f64> = keep.iter().map(|&i| data.y(i)[0]).collect();
                let defs: Vec<i16> = rows
                    .iter()
                    .map(|&i| i16::from(Some(i) != null_at))
                    .collect();
                let defs = null_at.is_some().then_some(&defs[..]);
                col.typed::<DoubleType>()
                    .write_batch(&v, defs, None)
                    .unwrap();
            }
            col.close().unwrap();
            j += 1;
        }
        rg.close().unwrap();
    }
    w.close().unwrap();
}

#[test]
fn a_parquet_file_is_read_like_the_same_csv() {
    let dir = tempfile::tempdir().unwrap();
    let (csv_path, pq_path) = (dir.path().join("moe.csv"), dir.path().join("moe.parquet"));
    let (m, truth) = model(Arc::new(Logistic::new()), 2, 3, Gating::Softmax);
    let data = collect(&Synthetic::new(m.clone(), truth, 5000, 5000, 4).unwrap());
    write_csv(&data, &csv_path);
    // Row groups of 1300 rows: chunks of 1000 cross their boundaries.
    write_parquet(&data, &pq_path, 1300, None);
    let (csv, _) = FileSource::open(&csv_path, &spec(), 1000).unwrap();
    let (pq, survey) = FileSource::open(&pq_path, &spec(), 1000).unwrap();
    assert_eq!(survey.n_rows, 5000);
    assert_eq!(pq.feature_names(), csv.feature_names());
    let theta0 = m.random_params(&mut ChaCha8Rng::seed_from_u64(6), 0.3);
    let ((_, _), (tc, lc)) = both(&m, &data, &csv, &theta0, 5);
    let ((_, _), (tp, lp)) = both(&m, &data, &pq, &theta0, 5);
    assert_eq!(bits(&tc), bits(&tp));
    assert_eq!(lc.to_bits(), lp.to_bits());
    // A null names its row and column.
    write_parquet(&data, &pq_path, 1300, Some(2600));
    let e = FileSource::open(&pq_path, &spec(), 1000).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("data row 2601") && text.contains("\"y\"") && text.contains("null"),
        "{text}"
    );
}

/// A streamed fit refuses the solvers written for rows in memory (mirror descent's inner
/// solves, Newton's observed-information pass) by name, instead of running another.
#[test]
fn streamed_fits_refuse_in_memory_solvers_by_name() {
    let (m, truth) = model(Arc::new(LinearGaussian::new()), 2, 3, Gating::Softmax);
    let data = collect(&Synthetic::new(m, truth, 400, 400, 2).unwrap());
    let source = InMemory::new(&data, 200).unwrap();
    for accel in [em_as_md::Accel::Md, em_as_md::Accel::Newton] {
        let p = MoeParams::new(2).accel(accel).check().unwrap();
        match p.fit_stream(&source, &data) {
            Err(em_as_md::MoeError::InvalidParam {
                name: "accel",
                reason,
            }) => {
                assert!(reason.starts_with(accel.as_str()), "{reason}");
            }
            other => panic!("{accel}: {:?}", other.map(|f| f.report().solver.clone())),
        }
    }
}

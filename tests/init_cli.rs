//! `mdem fit --init` and what the report says about the starts: each start's strategy,
//! the winner's, the spread of final log-likelihoods; a bad `--init` value is refused with
//! exit code 2; `certify` re-runs from the kept start whatever strategy drew it (here the
//! gated fit's start from the ungated optimum).

use assert_cmd::Command;

fn mdem() -> Command {
    Command::cargo_bin("mdem").expect("the mdem binary")
}

fn tone() -> String {
    format!("{}/data/tonedata.csv", env!("CARGO_MANIFEST_DIR"))
}

fn json(out: std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `mdem fit` on `tonedata` with [`TONE`] and `extra`.
fn fit_tone(extra: &[&str]) -> std::process::Output {
    mdem()
        .arg("fit")
        .arg(tone())
        .args(TONE)
        .args(extra)
        .output()
        .unwrap()
}

const TONE: [&str; 8] = [
    "--target",
    "tuned",
    "--experts",
    "2",
    "--expert",
    "linear",
    "--n-init",
    "6",
];

#[test]
fn the_json_report_names_every_start_strategy_and_the_spread() {
    for (init, first) in [
        ("auto", "kmeans"),
        ("kmeans", "kmeans"),
        ("random", "random"),
        ("subset", "subset"),
        ("short-em", "short-em"),
    ] {
        let v = json(fit_tone(&["--no-gate", "--init", init, "--json"]));
        assert_eq!(v["init"], init);
        let inits: Vec<&str> = v["start_inits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(inits.len(), 6, "ungated: no extra start");
        assert_eq!(inits[0], first);
        if init == "auto" {
            assert_eq!(
                inits,
                ["kmeans", "short-em", "random", "subset", "kmeans", "short-em"]
            );
        } else {
            assert!(inits.iter().all(|s| *s == init));
        }
        let best = v["best_start"].as_u64().unwrap() as usize;
        assert_eq!(v["best_start_init"], inits[best]);
        let mut lls: Vec<f64> = v["start_log_likelihoods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        lls.sort_by(f64::total_cmp);
        let spread = &v["start_log_likelihood_spread"];
        assert_eq!(spread["min"].as_f64().unwrap(), lls[0]);
        assert_eq!(spread["max"].as_f64().unwrap(), lls[5]);
        assert_eq!(spread["median"].as_f64().unwrap(), 0.5 * (lls[2] + lls[3]));
        let ll = v["log_likelihood"].as_f64().unwrap();
        assert!((ll - lls[5]).abs() < 1e-9 * ll.abs(), "{ll} vs {}", lls[5]);
        // Each start's cost: the kept start's iterations are the fit's.
        let per = |key: &str| -> Vec<f64> {
            v[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key}: {v}"))
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let iters = per("start_iterations");
        assert_eq!(iters.len(), 6);
        assert_eq!(iters[best], v["iterations"].as_f64().unwrap());
        assert!(iters.iter().all(|&i| i >= 1.0), "{iters:?}");
        for key in ["start_em_seconds", "start_setup_seconds"] {
            let s = per(key);
            assert_eq!(s.len(), 6, "{key}");
            assert!(s.iter().all(|t| t.is_finite() && *t >= 0.0), "{key}: {s:?}");
        }
    }
}

#[test]
fn the_text_report_has_a_starts_line_and_a_bad_init_is_refused() {
    let out = fit_tone(&["--quiet"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // Gated: 6 starts plus the one from the ungated optimum.
    let line = text.lines().find(|l| l.starts_with("starts")).expect(&text);
    assert!(line.contains("7 (auto); best: start "), "{line}");
    assert!(line.contains("log-likelihood min "), "{line}");
    let costs = text
        .lines()
        .find(|l| l.starts_with("iterations per start (EM seconds)"))
        .expect(&text);
    assert_eq!(costs.matches(" s)").count(), 7, "{costs}");
    // The ungated fit's row: every gated start ended below it, so its start ran.
    let row = text
        .lines()
        .find(|l| l.starts_with("ungated fit"))
        .expect(&text);
    assert!(row.contains("start from its optimum run"), "{row}");
    let bad = fit_tone(&["--init", "kmeans+"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--init"));
}

#[test]
fn certify_reruns_from_the_ungated_start_of_a_gated_fit() {
    let dir = std::env::temp_dir().join(format!("mdem-init-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tone.json");
    let fit = json(fit_tone(&["--json", "--out", model.to_str().unwrap()]));
    assert_eq!(fit["best_start_init"], "ungated", "{fit}");
    let cert = json(
        mdem()
            .arg("certify")
            .arg(&model)
            .arg(tone())
            .arg("--json")
            .output()
            .unwrap(),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // The re-run from the recorded start ends where the fit did.
    let ll = fit["log_likelihood"].as_f64().unwrap();
    let rerun = -150.0 * cert["certificate"]["final_objective"].as_f64().unwrap();
    assert!((rerun - ll).abs() < 1e-6 * ll.abs(), "{rerun} vs {ll}");
}

/// `--ungated-start`: on `tonedata` every gated start ends below the ungated fit, so the
/// start from its optimum runs under `when-below` (the default) as under `always`; `off`
/// fits no ungated model. The JSON says which; a bad value exits 2.
#[test]
fn the_ungated_start_policy_is_reported() {
    let fit = |policy: &str| json(fit_tone(&["--ungated-start", policy, "--json", "--quiet"]));
    let off = fit("off");
    assert_eq!(off["ungated_start"], "off");
    assert!(off["ungated_fit"].is_null(), "{off}");
    assert_eq!(off["start_inits"].as_array().unwrap().len(), 6);
    for policy in ["when-below", "always"] {
        let v = fit(policy);
        assert_eq!(v["ungated_start"], policy);
        let u = &v["ungated_fit"];
        assert_eq!(u["start_ran"], true, "{v}");
        let lu = u["log_likelihood"].as_f64().unwrap();
        let ll = v["log_likelihood"].as_f64().unwrap();
        assert!(ll >= lu - 1e-9 * lu.abs(), "{ll} < {lu}");
        // Every gated start ended below it: that is why the extra start ran.
        let lls = v["start_log_likelihoods"].as_array().unwrap();
        assert_eq!(lls.len(), 7);
        assert!(lls[..6].iter().all(|l| l.as_f64().unwrap() < lu), "{lls:?}");
        assert_eq!(v["start_inits"][6], "ungated");
        assert!(ll > off["log_likelihood"].as_f64().unwrap());
    }
    let bad = fit_tone(&["--ungated-start", "sometimes"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--ungated-start"));
}

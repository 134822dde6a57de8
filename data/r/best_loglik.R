# Best log-likelihood of R's EM over 20 seeded starts for each case of the mdem-vs-R suite
# (run from the repository root: Rscript data/r/best_loglik.R > data/r/best_loglik.csv).
#
# Per case and package, starts s = 1..20 each run after set.seed(s):
#  * flexmix: flexmix(formula, k = K, model = FLXMRglm(family), concomitant =
#    FLXPmultinom(~ x) for gated cases), which starts from a random hard partition;
#    control: iter.max 1000, tolerance 1e-10, minprior 0 (no component is dropped).
#  * mixtools (linear, ungated only): regmixEM(y, x, k = K) (component-specific variances,
#    intercept added), which starts from fits on random subsets; maxit 10000, epsilon 1e-10.
# A start that fails, or ends with fewer than K components, is not counted; the best
# logLik of the others is printed with the number counted.
#
# The values are comparable with mdem's total log-likelihood: both are
# sum_i log p(y_i | x_i) on the data as written in data/*.csv (targets unscaled; mdem
# standardises feature columns only, which does not change the likelihood); Gaussian
# experts have one variance per component; the Poisson density includes the -log(y!)
# term in both (dpois in R, the Poisson family's base measure in mdem). flexmix's
# Gaussian M-step estimates sigma with a degrees-of-freedom correction, so its fixed
# point is not exactly the maximum-likelihood one: its logLik is a lower bound of the
# optimum's, which mdem's EM (exact M-step) should reach or exceed.
suppressMessages({library(flexmix); library(mixtools)})

cases <- list(
  list(case = "tone", file = "tonedata.csv", target = "tuned", features = "stretchratio", expert = "linear", k = 2, gated = FALSE),
  list(case = "tone_gated", file = "tonedata.csv", target = "tuned", features = "stretchratio", expert = "linear", k = 2, gated = TRUE),
  list(case = "npreg_yn", file = "npreg.csv", target = "yn", features = "x x2", expert = "linear", k = 2, gated = FALSE),
  list(case = "co2", file = "co2data.csv", target = "CO2", features = "GNP", expert = "linear", k = 2, gated = FALSE),
  list(case = "npreg_yp", file = "npreg.csv", target = "yp", features = "x", expert = "poisson", k = 2, gated = FALSE),
  list(case = "fabricfault", file = "fabricfault.csv", target = "Faults", features = "logLength", expert = "poisson", k = 2, gated = FALSE),
  list(case = "patent_gated", file = "patent.csv", target = "Patents", features = "lgRD", expert = "poisson", k = 3, gated = TRUE)
)

versions <- sprintf("R %s.%s; flexmix %s; mixtools %s", R.version$major, R.version$minor,
                    packageVersion("flexmix"), packageVersion("mixtools"))
cat("case,file,target,features,expert,k,gated,package,starts_counted,r_loglik,versions\n")
for (cs in cases) {
  d <- read.csv(file.path("data", cs$file))
  feats <- strsplit(cs$features, " ")[[1]]
  rhs <- paste(feats, collapse = " + ")
  fml <- as.formula(paste(cs$target, "~", rhs))
  fam <- if (cs$expert == "linear") "gaussian" else "poisson"
  conc <- if (cs$gated) FLXPmultinom(as.formula(paste("~", rhs))) else NULL
  ctrl <- list(iter.max = 1000, tolerance = 1e-10, minprior = 0)
  ll <- c()
  for (s in 1:20) {
    set.seed(s)
    f <- tryCatch(
      if (is.null(conc)) flexmix(fml, data = d, k = cs$k, model = FLXMRglm(family = fam), control = ctrl)
      else flexmix(fml, data = d, k = cs$k, model = FLXMRglm(family = fam), concomitant = conc, control = ctrl),
      error = function(e) NULL)
    if (!is.null(f) && f@k == cs$k && is.finite(logLik(f))) ll <- c(ll, as.numeric(logLik(f)))
  }
  row <- function(pkg, ll) cat(sprintf("%s,%s,%s,%s,%s,%d,%s,%s,%d,%.10f,%s\n", cs$case, cs$file,
    cs$target, cs$features, cs$expert, cs$k, tolower(cs$gated), pkg, length(ll), max(ll), versions))
  row("flexmix", ll)
  if (cs$expert == "linear" && !cs$gated) {
    ll <- c()
    for (s in 1:20) {
      set.seed(s)
      f <- tryCatch(suppressWarnings(capture.output(
             m <- regmixEM(d[[cs$target]], as.matrix(d[feats]), k = cs$k, maxit = 10000, epsilon = 1e-10))),
             error = function(e) NULL)
      if (!is.null(f) && exists("m") && is.finite(m$loglik) && length(m$lambda) == cs$k) ll <- c(ll, m$loglik)
      if (exists("m")) rm(m)
    }
    row("mixtools", ll)
  }
}

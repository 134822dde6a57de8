# One fit by an R peer of mdem on a CSV file (columns x1..xd, y), for run_peers.py.
#
#   Rscript benches/peers/peers.R PACKAGE FILE K FAMILY GATED TOL MAXIT SEED [START]
#
# PACKAGE  flexmix: flexmix(y ~ x1 + ... + xd, k = K, model = FLXMRglm(family = FAMILY),
#                   concomitant = FLXPmultinom(~ x1 + ... + xd) when GATED is 1), one start
#                   (flexmix's own: a random hard partition after set.seed(SEED)), control
#                   iter.max = MAXIT, tolerance = TOL, minprior = 0 (no component dropped).
#                   FAMILY binomial fits cbind(y, 1 - y) ~ x1 + ... + xd (y in {0, 1}).
#          mixtools: regmixEM(y, x, k = K, epsilon = TOL, maxit = MAXIT) (mixture of linear
#                   regressions, one variance per component, intercept added), one start
#                   (mixtools' own: fits on random subsets after set.seed(SEED)).
# TOL      passed as is: flexmix stops when |l_t - l_{t-1}| / (|l_t| + 0.1) < TOL, l the total
#          log-likelihood; regmixEM when l_t - l_{t-1} < TOL (absolute). run_peers.py maps
#          mdem's --tol onto these.
# START    optional CSV with one column: each row's expert (1-based, or 0-based as gen_moe.py
#          --labels writes them) or K columns of
#          probabilities, given to flexmix as `cluster` (the start), instead of its own.
#
# Prints one JSON object: package versions, seconds of the fit call (system.time, elapsed)
# and of reading the CSV, the total log-likelihood, iterations, convergence, components.
args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 8) stop("usage: peers.R PACKAGE FILE K FAMILY GATED TOL MAXIT SEED [START]")
pkg <- args[1]; file <- args[2]; k <- as.integer(args[3]); family <- args[4]
gated <- args[5] == "1"; tol <- as.numeric(args[6]); maxit <- as.integer(args[7])
seed <- as.integer(args[8]); start <- if (length(args) >= 9) args[9] else ""
suppressMessages(library(pkg, character.only = TRUE))

read_s <- system.time(d <- read.csv(file))[["elapsed"]]
feats <- setdiff(names(d), "y")
rhs <- paste(feats, collapse = " + ")
out <- list(package = pkg, version = as.character(packageVersion(pkg)),
            r = paste(R.version$major, R.version$minor, sep = "."),
            n = nrow(d), read_s = read_s)
set.seed(seed)
if (pkg == "flexmix") {
  lhs <- if (family == "binomial") "cbind(y, 1 - y)" else "y"
  fml <- as.formula(paste(lhs, "~", rhs))
  ctrl <- list(iter.max = maxit, tolerance = tol, minprior = 0, verbose = 0)
  conc <- if (gated) FLXPmultinom(as.formula(paste("~", rhs))) else NULL
  cl <- NULL
  if (nzchar(start)) {
    s <- as.matrix(read.csv(start))
    cl <- if (ncol(s) == 1) as.integer(s[, 1]) + (min(s[, 1]) == 0) else s
  }
  call_fit <- function() {
    if (is.null(conc)) {
      if (is.null(cl)) flexmix(fml, data = d, k = k, model = FLXMRglm(family = family), control = ctrl)
      else flexmix(fml, data = d, cluster = cl, model = FLXMRglm(family = family), control = ctrl)
    } else {
      if (is.null(cl)) flexmix(fml, data = d, k = k, model = FLXMRglm(family = family), concomitant = conc, control = ctrl)
      else flexmix(fml, data = d, cluster = cl, model = FLXMRglm(family = family), concomitant = conc, control = ctrl)
    }
  }
  fit_s <- system.time(f <- call_fit())[["elapsed"]]
  out$fit_s <- fit_s
  out$loglik <- as.numeric(logLik(f))
  out$iterations <- f@iter
  out$converged <- isTRUE(f@converged)
  out$components <- f@k
} else if (pkg == "mixtools") {
  x <- as.matrix(d[feats])
  fit_s <- system.time(invisible(capture.output(
    m <- regmixEM(d$y, x, k = k, epsilon = tol, maxit = maxit))))[["elapsed"]]
  out$fit_s <- fit_s
  out$loglik <- m$loglik
  out$iterations <- length(m$all.loglik) - 1
  out$converged <- out$iterations < maxit
  out$components <- length(m$lambda)
  out$restarts <- m$restarts
} else stop("PACKAGE must be flexmix or mixtools")

json <- function(v) {
  if (is.character(v)) return(paste0('"', v, '"'))
  if (is.logical(v)) return(if (v) "true" else "false")
  if (!is.finite(v)) return("null")
  format(v, digits = 17)
}
cat("{", paste(sprintf('"%s": %s', names(out), vapply(out, json, "")), collapse = ", "), "}\n", sep = "")

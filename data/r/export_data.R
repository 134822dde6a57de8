# Writes the classic mixture-of-regressions data sets from R's mixtools and flexmix
# packages to data/*.csv (run once from the repository root: Rscript data/r/export_data.R).
# Every number is written with the fewest significant digits (15 to 17) that read back as
# the same double, so that mdem and R fit exactly the same data. Derived columns (x2 = x^2,
# logLength = log(Length)) are computed in R and written the same way.
suppressMessages({library(flexmix); library(mixtools)})

exact <- function(v) {
  if (is.integer(v)) return(as.character(v))
  vapply(v, function(x) {
    for (d in 15:17) { s <- sprintf(paste0("%.", d, "g"), x); if (as.numeric(s) == x) return(s) }
    sprintf("%.17g", x)
  }, "")
}
write_exact <- function(df, file) {
  out <- as.data.frame(lapply(df, exact), stringsAsFactors = FALSE)
  write.csv(out, file, row.names = FALSE, quote = FALSE)
  back <- read.csv(file)
  stopifnot(all(mapply(function(a, b) all(as.numeric(a) == b), back, df)))
}

data(tonedata, package = "mixtools")
write_exact(tonedata[, c("stretchratio", "tuned")], "data/tonedata.csv")
data(CO2data, package = "mixtools")
write_exact(CO2data[, c("GNP", "CO2")], "data/co2data.csv")
data(NPreg, package = "flexmix")
write_exact(data.frame(x = NPreg$x, x2 = NPreg$x^2, yn = NPreg$yn, yp = NPreg$yp), "data/npreg.csv")
data(fabricfault, package = "flexmix")
write_exact(data.frame(Length = fabricfault$Length, logLength = log(fabricfault$Length),
                       Faults = fabricfault$Faults), "data/fabricfault.csv")
data(patent, package = "flexmix")
write_exact(patent[, c("RDS", "lgRD", "Patents")], "data/patent.csv")

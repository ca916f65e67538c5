# Reference values for geoaudit's audit methods, computed by R's own packages.
# Run from the repository root:  Rscript tests/r_reference/meta_regression.R > tests/r_reference/expected.csv
# For each dataset (group, n, correct, covariate): y = correct / n, x = ln(covariate),
# vf = f(1-f)/n with f the fitted accuracy of lm(y ~ x, weights = n) (kept within
# [0.5/(n+1), 1 - 0.5/(n+1)]), v = p(1-p)/n with p = (correct + 0.5) / (n + 1), then
#   metafor::rma(y, vf, mods = ~ x, method = "REML" / "DL", test = "knha")  (random-effects)
#   lm(y ~ x) with sandwich::vcovHC(type = "HC3") and a t test on m - 2 df       (hc3)
#   lm(y ~ x, weights = sqrt(n))                                                (paper)
#   lm(y ~ x, weights = 1 / v)                                                  (binomial)
suppressPackageStartupMessages({library(metafor); library(sandwich); library(lmtest)})
here <- "tests/r_reference"
out <- data.frame()
add <- function(dataset, method, quantity, value) {
  out <<- rbind(out, data.frame(dataset = dataset, method = method, quantity = quantity,
                                value = sprintf("%.15g", value)))
}
for (ds in c("data1", "data2", "data3", "data4")) {
  d <- read.csv(file.path(here, paste0(ds, ".csv")))
  y <- d$correct / d$n
  x <- log(d$covariate)
  p <- (d$correct + 0.5) / (d$n + 1)
  v <- p * (1 - p) / d$n
  lo <- 0.5 / (d$n + 1)
  f <- pmin(pmax(fitted(lm(y ~ x, weights = d$n)), lo), 1 - lo)
  vf <- f * (1 - f) / d$n
  ctrl <- list(threshold = 1e-14, maxiter = 100000)
  for (tm in c("REML", "DL")) {
    fit <- rma(y, vf, mods = ~ x, method = tm, test = "knha", control = ctrl)
    meth <- paste0("random-effects-", tm)
    add(ds, meth, "beta", coef(fit)[2]); add(ds, meth, "intercept", coef(fit)[1])
    add(ds, meth, "bse", fit$se[2]); add(ds, meth, "intercept_bse", fit$se[1])
    add(ds, meth, "tvalue", fit$zval[2]); add(ds, meth, "pvalue", fit$pval[2])
    add(ds, meth, "fvalue", fit$QM); add(ds, meth, "tau2", fit$tau2)
    add(ds, meth, "ci_low", fit$ci.lb[2]); add(ds, meth, "ci_high", fit$ci.ub[2])
    add(ds, meth, "q", fit$QE); add(ds, meth, "q_pvalue", fit$QEp); add(ds, meth, "i2", fit$I2)
  }
  ols <- lm(y ~ x)
  V <- vcovHC(ols, type = "HC3")
  ct <- coeftest(ols, vcov. = V, df = length(y) - 2)
  add(ds, "hc3", "beta", coef(ols)[2]); add(ds, "hc3", "intercept", coef(ols)[1])
  add(ds, "hc3", "bse", sqrt(V[2, 2])); add(ds, "hc3", "intercept_bse", sqrt(V[1, 1]))
  add(ds, "hc3", "tvalue", ct[2, 3]); add(ds, "hc3", "pvalue", ct[2, 4])
  for (meth in c("paper", "binomial")) {
    w <- if (meth == "paper") sqrt(d$n) else 1 / v
    f <- summary(lm(y ~ x, weights = w))
    add(ds, meth, "beta", f$coefficients[2, 1]); add(ds, meth, "intercept", f$coefficients[1, 1])
    add(ds, meth, "bse", f$coefficients[2, 2]); add(ds, meth, "intercept_bse", f$coefficients[1, 2])
    add(ds, meth, "tvalue", f$coefficients[2, 3]); add(ds, meth, "pvalue", f$coefficients[2, 4])
    add(ds, meth, "fvalue", f$fstatistic[1])
  }
}
cat(sprintf("# R %s, metafor %s, sandwich %s\n", getRversion(), packageVersion("metafor"),
            packageVersion("sandwich")))
write.csv(out, stdout(), row.names = FALSE, quote = FALSE)

// What itscale_scaling writes: the results table (CSV and stdout) and the accuracy-vs-tokens
// chart (a hand-written SVG: log x axis, one polyline per method).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace arith {

/// One row of results.csv: a method at one budget over every problem.
struct result_row {
  std::string method;
  std::size_t budget = 0;
  std::size_t problems = 0;
  std::size_t correct = 0;
  double generated_tokens_per_problem = 0;
  double verifier_calls_per_problem = 0;
  double seconds = 0;  ///< sum over problems of the runs' `compute_stats::wall_seconds`
  [[nodiscard]] double accuracy() const noexcept {
    return problems == 0 ? 0.0 : static_cast<double>(correct) / static_cast<double>(problems);
  }
};

inline constexpr const char* csv_header =
    "method,budget,problems,correct,accuracy,generated_tokens_per_problem,verifier_calls_per_problem,seconds";

inline std::string format(const char* fmt, auto... args) {
  char buf[512];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

inline void write_csv(const std::string& path, const std::vector<result_row>& rows) {
  std::ofstream f(path);
  if (!f) throw std::runtime_error("cannot write " + path);
  f << csv_header << '\n';
  for (const auto& r : rows)
    f << format("%s,%zu,%zu,%zu,%.6f,%.3f,%.3f,%.3f\n", r.method.c_str(), r.budget, r.problems, r.correct,
                r.accuracy(), r.generated_tokens_per_problem, r.verifier_calls_per_problem, r.seconds);
  if (!f) throw std::runtime_error("cannot write " + path);
}

/// What the chart shows besides the rows.
struct chart_info {
  std::string title;           ///< names the model and the problem set
  std::string reference_label; ///< e.g. "arith-2500.bin greedy"
  double reference_accuracy = -1;  ///< < 0: no reference line
};

namespace detail {

inline std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

}  // namespace detail

/// Accuracy against mean generated tokens per problem (log x), one polyline per method in row
/// order (points by budget), markers, legend, axes with ticks, title, and a dashed reference line.
inline void write_svg(const std::string& path, const std::vector<result_row>& rows, const chart_info& info) {
  using detail::xml_escape;
  constexpr double W = 960, H = 600, left = 80, right = 230, top = 60, bottom = 70;
  constexpr double pw = W - left - right, ph = H - top - bottom;
  static const char* palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"};

  // Methods in the order of their first row.
  std::vector<std::string> names;
  for (const auto& r : rows)
    if (std::find(names.begin(), names.end(), r.method) == names.end()) names.push_back(r.method);

  double lo = 1e300, hi = 0;
  for (const auto& r : rows) {
    const double x = std::max(r.generated_tokens_per_problem, 1.0);
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  if (rows.empty()) lo = 1, hi = 10;
  // x from the tick (1, 2 or 5 times a power of ten) at or below the least tokens to the one at or
  // above the most.
  const auto tick_below = [](double v) {
    const double d = std::pow(10.0, std::floor(std::log10(v)));
    return v >= 5 * d ? 5 * d : v >= 2 * d ? 2 * d : d;
  };
  const auto tick_above = [](double v) {
    const double d = std::pow(10.0, std::floor(std::log10(v)));
    return v <= d ? d : v <= 2 * d ? 2 * d : v <= 5 * d ? 5 * d : 10 * d;
  };
  const double xlo = tick_below(lo);
  double xhi = tick_above(hi);
  if (xhi <= xlo) xhi = xlo * 2;
  const auto X = [&](double v) { return left + pw * (std::log10(std::max(v, 1.0)) - std::log10(xlo)) / (std::log10(xhi) - std::log10(xlo)); };
  // y from a tenth below the lowest accuracy (or the reference) to 1: the curves' differences are
  // what the chart is for.
  double amin = info.reference_accuracy >= 0 ? info.reference_accuracy : 1.0;
  for (const auto& r : rows) amin = std::min(amin, r.accuracy());
  const double ylo = std::max(0.0, std::floor((amin - 0.05) * 10.0) / 10.0);
  const double ystep = 1.0 - ylo > 0.5 ? 0.1 : 0.05;
  const auto Y = [&](double a) { return top + ph * (1.0 - (a - ylo) / (1.0 - ylo)); };

  std::string s;
  s += format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
              "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"13\">\n", W, H, W, H);
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += format("<text x=\"%.1f\" y=\"30\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">%s</text>\n",
              left + pw / 2, xml_escape(info.title).c_str());
  // Grid and ticks: y every 0.1 (0.05 on a short axis), x at 1, 2, 5 per decade.
  for (int i = 0; ylo + i * ystep <= 1.0 + 1e-9; ++i) {
    const double a = ylo + i * ystep, y = Y(a);
    s += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", left, y, left + pw, y);
    s += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", left - 5, y, left, y);
    s += format("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n", left - 8, y + 4, a);
  }
  for (double d = std::pow(10.0, std::floor(std::log10(xlo))); d < xhi * 1.001; d *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      const double v = d * m;
      if (v < xlo * 0.999) continue;
      if (v > xhi * 1.001) break;
      const double x = X(v);
      s += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", x, top, x, top + ph,
                  m == 1.0 ? "#d0d0d0" : "#eeeeee");
      s += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", x, top + ph, x, top + ph + 5);
      s += format("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", x, top + ph + 20, v);
    }
  }
  s += format("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n", left, top, pw, ph);
  s += format("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">mean generated tokens per problem (log scale)</text>\n",
              left + pw / 2, H - 25);
  s += format("<text x=\"20\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 20 %.1f)\">accuracy</text>\n",
              top + ph / 2, top + ph / 2);
  if (info.reference_accuracy >= 0) {
    const double y = Y(info.reference_accuracy);
    s += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\" stroke-width=\"1.5\" "
                "stroke-dasharray=\"6 4\"/>\n", left, y, left + pw, y);
    // Above the line, or below it when the line runs near the top of the plot.
    const double ty = info.reference_accuracy > 0.93 ? y + 16 : y - 6;
    s += format("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"12\">%s: %.3f</text>\n", left + pw - 4, ty,
                xml_escape(info.reference_label).c_str(), info.reference_accuracy);
  }
  // A method with one point (no width) gets a ring around its marker, drawn last, so that a curve
  // passing through the same point (beam search at width 1 is greedy) does not hide it.
  const auto ring = [&](std::size_t k, double x, double y) {
    return format("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"8\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"/>\n", x, y,
                  palette[k % 12]);
  };
  std::string rings;
  const auto marker = [&](std::size_t k, double x, double y) {
    const char* c = palette[k % 12];
    switch (k % 4) {  // shapes and colours both vary, so neighbours differ in both
      case 0: return format("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\"/>\n", x, y, c);
      case 1: return format("<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"8\" fill=\"%s\"/>\n", x - 4, y - 4, c);
      case 2: return format("<path d=\"M%.1f %.1fl5 5l-5 5l-5 -5z\" fill=\"%s\"/>\n", x, y - 5, c);
      default: return format("<path d=\"M%.1f %.1fl5 9h-10z\" fill=\"%s\"/>\n", x, y - 5, c);
    }
  };
  for (std::size_t k = 0; k < names.size(); ++k) {
    std::vector<const result_row*> pts;
    for (const auto& r : rows)
      if (r.method == names[k]) pts.push_back(&r);
    std::sort(pts.begin(), pts.end(), [](auto* a, auto* b) { return a->budget < b->budget; });
    std::string pl;
    for (auto* r : pts) pl += format("%.1f,%.1f ", X(r->generated_tokens_per_problem), Y(r->accuracy()));
    s += format("<g><title>%s</title>\n", xml_escape(names[k]).c_str());
    if (pts.size() > 1)
      s += format("<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"/>\n", pl.c_str(), palette[k % 12]);
    if (pts.size() == 1) {
      rings += format("<g><title>%s</title>\n", xml_escape(names[k]).c_str()) +
               ring(k, X(pts[0]->generated_tokens_per_problem), Y(pts[0]->accuracy())) +
               marker(k, X(pts[0]->generated_tokens_per_problem), Y(pts[0]->accuracy())) + "</g>\n";
    } else {
      for (auto* r : pts) s += marker(k, X(r->generated_tokens_per_problem), Y(r->accuracy()));
    }
    s += "</g>\n";
    // Legend entry.
    const double ly = top + 10 + 22.0 * static_cast<double>(k), lx = left + pw + 20;
    if (pts.size() == 1)
      s += ring(k, lx + 14, ly);
    else
      s += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n", lx, ly,
                  lx + 28, ly, palette[k % 12]);
    s += marker(k, lx + 14, ly);
    s += format("<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", lx + 36, ly + 4, xml_escape(names[k]).c_str());
  }
  s += rings;
  if (info.reference_accuracy >= 0) {
    const double ly = top + 10 + 22.0 * static_cast<double>(names.size()), lx = left + pw + 20;
    s += format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\" stroke-width=\"1.5\" "
                "stroke-dasharray=\"6 4\"/>\n", lx, ly, lx + 28, ly);
    s += format("<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", lx + 36, ly + 4, xml_escape(info.reference_label).c_str());
  }
  s += "</svg>\n";
  std::ofstream f(path);
  if (!f || !(f << s)) throw std::runtime_error("cannot write " + path);
}

}  // namespace arith

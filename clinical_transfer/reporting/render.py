"""The Markdown run report: provenance, inclusion counts, positive controls first, then each label.

Why this order: a reader must see where the data came from and what was excluded, then proof that the
machinery finds what it should (age, sex), before any clinical label. Every number shown is a group-level
statistic; feature names are neutral indices; the banner and the limitations link are always present.
"""

from __future__ import annotations

import base64
import html as h
import re
from pathlib import Path

import pandas as pd

from clinical_transfer import guardrails
from clinical_transfer.reporting import figures
from clinical_transfer.stats.verdicts import NO_NUMBERS

TOP_N = 5
LADDER = (
    "How to read the verdicts: `robust correlate` only when the adjusted association holds (q < alpha), "
    "every estimated confound stratum has the same sign without significant heterogeneity (at least one split "
    "variable with two strata), the matched estimate agrees, the feature does not track a nuisance variable "
    "and the Freedman–Lane family-wise p is below alpha. A check that could not run gives `adjusted correlate, "
    "robustness untested`; a check that failed gives `unstable across splits` or `tracks nuisance`. "
    "`inconclusive after adjustment` means significant only before adjustment, with a change too uncertain to "
    "call it confound-explained."
)


_MD_SPECIAL = re.compile(r"([\\|\[\]`])")


def md_text(value) -> str:
    """A value from the data (a label, a metadata level, an atlas label) as inert Markdown text: one line,
    no table pipes, links, images or HTML. Why: metadata is input; a value like ``A\n![x](/etc/hostname)``
    or ``<script>`` must stay text in REPORT.md, and a ``|`` must not shift a table's columns."""
    text = " ".join(str(value).splitlines())
    return _MD_SPECIAL.sub(r"\\\1", text).replace("<", "&lt;").replace(">", "&gt;")


def _plain(md: str) -> str:
    """Inverse of :func:`md_text` (for the HTML, which escapes everything itself)."""
    return re.sub(r"\\(.)", r"\1", md).replace("&lt;", "<").replace("&gt;", ">")


def _table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_\n"
    cols = [md_text(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = [("—" if v != v else str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:.3g}")
                 if isinstance(v, float) else md_text(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _verdicts(overlay: pd.DataFrame) -> pd.DataFrame:
    counts = overlay.groupby(["segment_group", "verdict"]).size().unstack(fill_value=0)
    return counts.reset_index()


def _top(overlay: pd.DataFrame, verdict: str) -> pd.DataFrame:
    rows = overlay[overlay["verdict"] == verdict].sort_values(["segment_group", "p_adj"]).groupby("segment_group").head(TOP_N)
    cols = ["segment_group", "feature", "feature_label", "beta_raw", "beta_adj", "attenuation", "q_adj", "q_run",
            "auroc", "auroc_low", "auroc_high", "auroc_adj", "n_strata", "n_strata_same_sign", "matched_agreement",
            "p_fwe", "replicated", "stability", "nuisance_flag", "note"]
    return rows[[c for c in cols if c in rows.columns]]


def _figures(run, label: str, target: pd.DataFrame, out: Path) -> list[str]:
    """Draw the label's figures under out/figures and return Markdown image lines."""
    lines = []
    fig_dir = out / "figures"
    safe = "".join(c if c.isalnum() else "_" for c in label)
    v = figures.volcano(target, label, fig_dir / f"{safe}_volcano.png")
    label_md = md_text(label)
    lines.append(f"![{label_md}: volcano plot per segment group](figures/{v.name})")
    h = figures.heatmap(target, label, fig_dir / f"{safe}_heatmap.png")
    if h is not None:
        lines.append(f"![{label_md}: segment group x top feature heatmap](figures/{h.name})")
    splits = run.overlays[label].splits
    if not splits.empty:
        for group, rows in target[target["verdict"] == "robust correlate"].groupby("segment_group"):
            top = rows.nsmallest(1, "p_adj").iloc[0]
            f = figures.forest(splits, top, label, group, top["feature"], fig_dir / f"{safe}_{group}_forest.png")
            if f is not None:
                lines.append(f"![{label_md}: forest plot of {top['feature']} in {group}](figures/{f.name})")
    return [x for line in lines for x in (line, "")]


def render_html(markdown: str, out: Path) -> Path:
    """A self-contained HTML version of the Markdown report (figures embedded as data URIs).

    Only PNGs inside the run's own ``figures/`` folder are embedded (the resolved path must lie there): an
    image line pointing anywhere else is shown as text, never read."""
    body, table, in_list = [], [], False
    fig_dir = (Path(out) / "figures").resolve()

    def text(md: str) -> str:
        return h.escape(_plain(md))

    def figure(alt: str, target: str) -> str:
        path = (Path(out) / target).resolve()
        if fig_dir not in path.parents or path.suffix != ".png" or not path.is_file():
            return f"<p>{text(f'![{alt}]({target})')} (not embedded: not a figure of this run)</p>"
        data = base64.b64encode(path.read_bytes()).decode()
        return (f'<figure><img alt="{text(alt)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{text(alt)}</figcaption></figure>")

    def flush_table():
        if table:
            rows = [re.split(r"(?<!\\)\|", r.strip()[1:-1]) for r in table if not set(r.strip()) <= set("|-")]
            head, *rest = rows
            body.append("<table><thead><tr>" + "".join(f"<th>{text(c.strip())}</th>" for c in head) + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{text(c.strip())}</td>" for c in r) + "</tr>" for r in rest)
                        + "</tbody></table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if in_list and not line.startswith("- "):
            body.append("</ul>")
            in_list = False
        img = re.match(r"!\[(.*)\]\((.*)\)$", line)
        if img:
            body.append(figure(img.group(1), img.group(2)))
        elif line.startswith("> "):
            body.append(f'<div class="banner">{text(line[2:].strip("*"))}</div>')
        elif line.startswith("## "):
            body.append(f"<h2>{text(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{text(line[2:])}</h1>")
        elif line.startswith("- "):
            if not in_list:
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{text(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{text(line)}</p>")
    flush_table()
    if in_list:
        body.append("</ul>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             ".banner{background:#fff3cd;border:1px solid #e0c36c;padding:.6em 1em;font-weight:bold}"
             "table{border-collapse:collapse;font-size:12px;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:2px 6px}"
             "th{background:#f2f2f2}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:12px;color:#555}")
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Correlate overlay report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    path = out / "report.html"
    path.write_text(page)
    return path


def _acoustic_section(run) -> list[str]:
    """Verdict counts of each label with and without the eGeMAPS components as confounds."""
    pairs = [(k.split("+acoustic")[0], k) for k in run.overlays if "+acoustic" in k]
    if not pairs:
        return []
    rows = []
    for plain, adjusted in pairs:
        for name, key in (("confounds", plain), ("confounds + acoustic components", adjusted)):
            counts = run.target(key).groupby("segment_group")["verdict"].value_counts().unstack(fill_value=0)
            for group, c in counts.iterrows():
                rows.append({"label": plain, "segment_group": group, "adjusted for": name,
                             "robust correlate": int(c.get("robust correlate", 0)),
                             "adjusted correlates (any rung)": int(sum(v for k, v in c.items() if "correlate" in k))})
    return ["## SAE correlates beyond plain acoustics",
            "Each label's overlay is run twice: with the configured confounds, and with the top principal "
            "components of the eGeMAPS descriptors (fit per segment group) added. A feature that stays a correlate "
            "in the second carries something plain acoustics does not.", "", _table(pd.DataFrame(rows))]


def _stable_line(target: pd.DataFrame) -> list[str]:
    if "stability" not in target.columns:
        return []
    robust = target[target["verdict"] == "robust correlate"]
    parts = [f"{g}: {int((r['stability'] >= 0.8).sum())} of {len(r)}" for g, r in robust.groupby("segment_group")]
    return [f"Robust correlates on seed-stable features (stability >= 0.8): {'; '.join(parts) or 'none'}.", ""]


def _split_lines(fit: dict) -> list[str]:
    if fit["heldout_unit"] == "recording":
        return [f"- one participant only, so recordings are held out instead of people: {fit['n_dictionary']} "
                f"recordings trained the SAE, {fit['n_quality']} measured its quality (the same person's other "
                "recordings: an optimistic test)"]
    left_out = "left out of every overlay" if fit["fit_on"] == "split" else "also analysed (fit on all)"
    return [f"- participants split by a seeded hash: dictionary {fit['n_dictionary']} ({left_out}), quality "
            f"held-out {fit['n_quality']} (never trained on), analysed {fit['n_analysed']}"]


def _sae_section(run) -> list[str]:
    """The corpus-fit SAE's identity, split sizes and held-out quality (none for a given SAE)."""
    fit = getattr(run, "sae_fit", None) or {}
    if not fit:
        return []
    h = fit["heldout"]
    lines = ["", "### The SAE (fit to this corpus, label-blind)",
             f"- {run.models.sae}",
             *_split_lines(fit),
             f"- held-out quality ({fit['heldout_tokens']} frames of held-out {fit['heldout_unit']}s): FVE {h['fve']:.3f}, "
             f"normalised L2 {h['normalized_l2']:.3f}, L0 {h['l0']:.1f}, dead fraction {h['dead_fraction']:.3f}"]
    if "embedded_default_heldout" in fit:
        e = fit["embedded_default_heldout"]
        lines.append(f"- the embedded demo SAE on the same held-out frames: FVE {e['fve']:.3f}, normalised L2 "
                     f"{e['normalized_l2']:.3f}, dead fraction {e['dead_fraction']:.3f}")
    if "stability" in fit:
        st = fit["stability"]
        lines.append(f"- seed stability over {fit['seeds']} seeds: {st['n_stable']} of {st['n_features']} features "
                     f"stable (matched decoder cosine >= {st['stable_threshold']}), median {st['median']:.2f}")
    return lines + [""]


def _planted_section(run, label: str, target: pd.DataFrame, packets: pd.DataFrame) -> list[str]:
    """Demo only: which features the planted effect moves, what the statistics called them, what their
    packets name (see :mod:`clinical_transfer.run.planted`)."""
    probe = getattr(run, "planted", None)
    if probe is None or label not in set(probe["label"]):
        return []
    probe = probe[probe["label"] == label]
    keys = ["segment_group", "feature"]
    found = probe[probe["planted"]].merge(target[keys + ["verdict", "auroc_adj", "stability"]], on=keys, how="left")
    found = found.merge(packets.drop(columns=["verdict", "planted_z"], errors="ignore"), on=keys, how="left")
    found = found.assign(_a=found["planted_z"].abs()).sort_values(["segment_group", "_a"], ascending=[True, False])
    robust = target[target["verdict"] == "robust correlate"][keys].merge(probe, on=keys, how="left")
    lines = []
    for group, g in probe.groupby("segment_group", sort=True):
        f = found[found["segment_group"] == group]
        r = robust[robust["segment_group"] == group]
        lines.append(f"- {group}: {len(f)} planted feature(s), {int((f['verdict'] == 'robust correlate').sum())} "
                     f"of them robust correlates; of {len(r)} robust correlate(s), {int((r['planted_z'].abs() >= 0.5).sum())} "
                     f"moved by the plant by >= 0.5 SD ({int(g['n_pairs'].iloc[0])} on/off pairs from "
                     f"{int(g['n_participants'].iloc[0])} participants)")
    cols = keys + ["planted_z", "verdict", "auroc_adj", "stability", "top descriptor (partial Spearman rho)",
                   "groups tied at the top"]
    return [f"Planted truth (synthetic corpus only): every {md_text(label)}-positive participant's vowels and counting "
            "were synthesised again without the plant (the same random streams) and scored; a feature's "
            "planted z is the mean on-minus-off change of its activation in units of its between-participant SD, and it "
            "is a planted feature when |z| >= 1 and the change is consistent across participants (Wilcoxon signed-rank, "
            f"Bonferroni over the group's features; `planted/{md_text(label)}.csv`). Coughs and breaths carry no plant. "
            "As synthesised, the plant also makes a voice 1-2 dB quieter (a rougher waveform, peak-normalised), so "
            "level descriptors move with it too.",
            "", *lines, "",
            "Planted features and their evidence packets (groups tied at the top: eGeMAPS groups with a descriptor "
            "whose partial rho is not significantly below the top one's, Williams' t, p >= 0.05):", "",
            _table(found[[c for c in cols if c in found.columns]])]


def render_markdown(run, out: str | Path) -> Path:
    """Write ``REPORT.md`` (and ``report.html``) for a run.

    ``run`` is a :class:`clinical_transfer.run.result.RunResult`, read by attribute (reporting does not
    import the orchestration layer that builds it).
    """
    inv = run.inventory
    m = run.models
    parts = [
        f"# Correlate overlay report — {run.dataset}",
        "",
        "Correlates of labels with features of a frozen audio model, after confound controls. No statement "
        "here is about any person; feature ids are neutral indices, not names. Read LIMITATIONS.md "
        "(beside the clinical-transfer README) before interpreting anything.",
        "",
        "## Data provenance and inclusion",
        f"- corpus: {run.dataset} ({run.corpus_note})",
        *([f"- licence: {run.corpus['licence']}; cite: {run.corpus['citation']}"] if getattr(run, "corpus", None) else []),
        f"- config: {run.config_source}",
        f"- participants: {inv.n_participants}; recordings expected: {inv.n_recordings}; "
        f"scored: {run.n_scored}",
        f"- encoder: {m.encoder} layer {m.layer} ({m.layer_convention})",
        f"- SAE: {m.sae}; score tested per recording: {run.aggregation}",
        f"- confounds adjusted: {', '.join(run.confounds)}; split variables: {', '.join(run.strata)}",
        "",
        *_sae_section(run),
        "Exclusions by reason (recordings):",
        "",
        _table(inv.excluded),
        "Prompted speech (counting), sustained vowels, coughs and breaths are analysed separately and never "
        "pooled: prompted-task features can reflect the task, language or reading style.",
        "",
        "## Positive controls (age, sex)",
        "Age and sex should give strong, stable overlays; they show the machinery works. Their verdicts stop "
        "below `robust correlate` by design (no permutation null is run for them); `unstable across splits` on a "
        "control means a stratum disagrees in sign, or the size differs between strata without being significant "
        "in each (an age effect in one sex only, for example); the overlay table's note says which.",
        "",
    ]
    pc = run.positive_controls()
    parts.append(_table(pc) if not pc.empty else "_positive controls not available in this corpus_\n")
    stability = getattr(run, "stability", None)
    if stability is not None:
        fig = figures.stability_histogram(stability, Path(out) / "figures" / "sae_stability.png")
        parts += ["## Seed stability of the SAE's features", "",
                  f"![seed stability of the SAE's features](figures/{fig.name})", ""]
    parts += _acoustic_section(run)
    for label in run.overlays:
        target = run.target(label)
        contrast = target["contrast"].iloc[0] if len(target) else ""
        parts += [f"## {md_text(label)} ({md_text(contrast)})", ""]
        if label in run.missing_as:
            parts += [f"Blank answers of {md_text(label)} were analysed as {md_text(run.missing_as[label])} (not reported), "
                      "not as unknown.", ""]
        design = run.design(label)
        if not design.empty:
            parts += ["Design per segment group (participants are the unit; rare confound levels are coarsened "
                      "before fitting; a family too thin to test is `not estimable`):", "", _table(design)]
        parts += ["Verdicts per segment group (features):", "", _table(_verdicts(target)),
                  LADDER, "",
                  "Robust correlates (top 5 per group):", "", _table(_top(target, "robust correlate")),
                  *_stable_line(target),
                  "Adjusted correlates whose robustness could not be tested (top 5 per group; `note` says which "
                  "check could not run):", "", _table(_top(target, "adjusted correlate, robustness untested")),
                  "Confound-explained (significant unadjusted; adjustment significantly removed at least half; "
                  "top 5 per group):", "", _table(_top(target, "confound-explained"))]
        parts += _figures(run, label, target, Path(out))
        null = run.permutation_null(label)
        if not null.empty:
            parts += ["Freedman–Lane permutation null (whole participants; BH discoveries under the null and the "
                      "95% max-T threshold):", "", _table(null)]
        packets = getattr(run, "evidence", {}).get(label)
        if packets is not None and not packets.empty:
            parts += [f"Evidence packets (`evidence/{label}/<group>/<feature>.json`: activation density, "
                      "participant-level activation by label x sex x age band with small cells suppressed, the "
                      "eGeMAPS descriptors the feature tracks beyond the confounds (participant-level partial "
                      "Spearman given the adjusted confounds), nuisance associations, decoder norm, stability):",
                      "", _table(packets)]
            parts += _planted_section(run, label, target, packets)
            frames = getattr(run, "top_frames", {})
            if frames.get("thumbnails"):
                parts += [f"Top-activating frames of these features: `evidence/{label}/<group>/top_frames.png` "
                          "(log-mel windows around each feature's three strongest peaks; drawn only because this "
                          "corpus is synthetic).", ""]
            elif frames.get("features"):
                parts += ["Top-activating frames of these features were located; as this is a real corpus, only "
                          "pseudonymous recording ids and time offsets were written, to the private folder "
                          "(`<out>_private/evidence_top_frames.csv`), never to this report.", ""]
        rep = run.replication(label)
        if not rep.empty:
            parts += ["Replication split (participants halved by a seeded hash; a discovery in one half "
                      "replicates when the other half has the same sign and p < 0.05):", "", _table(rep)]
        for verdict in NO_NUMBERS:
            note = target.loc[target["verdict"] == verdict, "note"]
            if len(note):
                parts += [f"{verdict.capitalize()} groups: "
                          f"{', '.join(sorted(set(target.loc[note.index, 'segment_group'])))} — {note.iloc[0]}", ""]
    parts += ["## Limitations", "",
              "These are statistical correlates in one public corpus: self-reported labels, recruitment and "
              "collection-wave confounds, prompted-task artifacts, frozen research models. Cells with fewer than "
              f"{run.min_cell} participants are suppressed. See LIMITATIONS.md."]
    md = guardrails.write_text("\n".join(parts), Path(out) / "REPORT.md")
    render_html(md.read_text(), Path(out))
    return md

// What the projection can be coloured by for one analysis: only what the run has — labels, predictions, their
// correctness, the selected neuron, its metadata columns — and which of those a choice falls back to.
import type { AnalysisSummary } from "../api/analysis";
import type { ColorBy } from "./viewstate";

type Summary = Pick<AnalysisSummary, "has_labels" | "has_scores" | "columns">;

/** The instance table's own columns: never offered as metadata. */
const CORE_COLUMNS = new Set(["index", "label", "prediction", "correct", "score", "scores"]);

export interface ColorOption {
  id: ColorBy;
  label: string;
}

export interface ColorColumn {
  name: string;
  /** Numbers (`int`, `float`) and times (`date`, `time`) along a scale; the rest (`bool`, `string`) as categories. */
  numeric: boolean;
  time: boolean;
}

/** The metadata columns a colouring can use. */
export function colorColumns(summary: Summary): ColorColumn[] {
  return summary.columns
    .filter((c) => !CORE_COLUMNS.has(c.name) && c.kind !== "other")
    .map((c) => {
      const time = c.kind === "date" || c.kind === "time";
      return { name: c.name, numeric: time || c.kind === "int" || c.kind === "float", time };
    });
}

/** The colourings this analysis offers, the default first: classes and correctness only where the run has them,
 * one colour where it has neither labels nor predictions (a regressor), then the neuron and the metadata. */
export function colorOptions(summary: Summary): ColorOption[] {
  const out: ColorOption[] = [];
  if (summary.has_labels) out.push({ id: "label", label: "Label" });
  if (summary.has_scores) out.push({ id: "prediction", label: "Prediction" });
  if (summary.has_labels && summary.has_scores) out.push({ id: "correct", label: "Correctness" });
  if (!out.length) out.push({ id: "none", label: "One colour" });
  out.push({ id: "neuron", label: "Selected neuron" });
  for (const c of colorColumns(summary)) out.push({ id: `column:${c.name}`, label: `${c.name} (${c.time ? "time" : c.numeric ? "number" : "category"})` });
  return out;
}

/** The colouring a choice gives for this analysis: a choice it does not offer falls back to the first it does. */
export function colorChoice(choice: ColorBy, summary: Summary): ColorBy {
  const options = colorOptions(summary);
  return options.some((o) => o.id === choice) ? choice : options[0].id;
}

export interface RowGrouping {
  id: string;
  label: string;
}

/** Values a matrix row apiece; a column of more (texts, ids) is offered after those that are categories. */
const FEW_VALUES = 24;

/** What the neuron matrix's rows can be: the true classes, the predicted ones, or a text, boolean or integer
 * metadata column's values (the most frequent apiece) — only what the run has, its classes first, then columns of
 * few values (categories), then the others (a text per instance would be a row per instance). */
export function rowGroupings(summary: Summary): RowGrouping[] {
  const out: RowGrouping[] = [];
  if (summary.has_labels) out.push({ id: "label", label: "true class" });
  if (summary.has_scores) out.push({ id: "prediction", label: "predicted class" });
  const columns = summary.columns.filter((c) => !CORE_COLUMNS.has(c.name) && (c.kind === "string" || c.kind === "bool" || c.kind === "int"));
  const few = (c: (typeof columns)[number]) => (c.distinct ?? 0) <= FEW_VALUES;
  for (const c of [...columns.filter(few), ...columns.filter((c) => !few(c))]) out.push({ id: `column:${c.name}`, label: c.name });
  return out;
}

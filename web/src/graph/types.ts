// The graph view's data: what the server sends (generated types) and what the layout makes of it.
import type { components } from "../api/schema";

export type GraphView = components["schemas"]["GraphView"];
export type GNode = components["schemas"]["GraphNode"];
export type GEdge = components["schemas"]["GraphEdge"];
export type GModule = components["schemas"]["GraphModule"];
export type GMatch = components["schemas"]["GraphMatch"];

/** One level handed to the layout worker: the items directly inside one open module, and edges by index. */
export interface LevelInput {
  key: string;
  n: number;
  w: Float64Array;
  h: Float64Array;
  src: Int32Array;
  dst: Int32Array;
}

/** Where the worker put a level's items: centres, relative to the level's top-left corner. */
export interface LevelLayout {
  key: string;
  x: Float64Array;
  y: Float64Array;
  width: number;
  height: number;
  engine: "dagre" | "chain";
  ms: number;
}

export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface PlacedNode extends Rect {
  node: GNode;
}

export interface PlacedContainer extends Rect {
  path: string;
  label: string;
  type: string;
  depth: number;
}

export interface PlacedEdge {
  edge: GEdge;
  /** The curve as a polyline (x0, y0, x1, y1, …), for drawing and hit tests. */
  pts: Float64Array;
  box: Rect;
}

export interface Scene {
  nodes: PlacedNode[];
  containers: PlacedContainer[];
  edges: PlacedEdge[];
  byId: Map<string, PlacedNode>;
  width: number;
  height: number;
}

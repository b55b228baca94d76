// Planning time of @apollo/query-planner: stdin JSON {supergraph, queries, rounds}; prints
// JSON {build_ms, cold_ms: [per query]} (cold: first plan of each query by a new planner).
import {
  Supergraph, operationFromDocument, ROUTER_SUPPORTED_SUPERGRAPH_FEATURES,
} from "@apollo/federation-internals";
import { QueryPlanner } from "@apollo/query-planner";
import { parse } from "graphql";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { supergraph, queries, rounds } = JSON.parse(input);
let t = performance.now();
// Apollo Router's feature set: the @context supergraph needs it (@apollo/gateway refuses it).
const sg = Supergraph.build(supergraph, { supportedFeatures: ROUTER_SUPPORTED_SUPERGRAPH_FEATURES });
let planner = new QueryPlanner(sg);
const build_ms = performance.now() - t;
const cold_ms = queries.map(() => 0);
for (let r = 0; r < rounds; r++) {
  planner = new QueryPlanner(sg);
  queries.forEach((q, i) => {
    const op = operationFromDocument(sg.schema, parse(q));
    const s = performance.now();
    planner.buildQueryPlan(op);
    cold_ms[i] += (performance.now() - s) / rounds;
  });
}
process.stdout.write(JSON.stringify({ build_ms, cold_ms }));

// For the @context compat suite: stdin JSON {case: {sdl, ops: {name: query}}} -> stdout JSON
// {case: {gateway: <why @apollo/gateway refuses the supergraph, or null>,
//         plans: {name: [{service, path, contextArguments}]}}}: the fetches of the plan
// @apollo/query-planner builds for Apollo Router (router-supported supergraph features).
import { ApolloGateway } from "@apollo/gateway";
import { QueryPlanner } from "@apollo/query-planner";
import {
  Supergraph, operationFromDocument, ROUTER_SUPPORTED_SUPERGRAPH_FEATURES,
} from "@apollo/federation-internals";
import { parse } from "graphql";

let input = "";
for await (const chunk of process.stdin) input += chunk;

function fetches(node, path, out) {
  if (!node) return out;
  if (node.kind === "Fetch") {
    const args = [...node.operation.matchAll(/(\w+):\$contextualArgument_\w+/g)].map((m) => m[1]);
    out.push({ service: node.serviceName, path: path.filter((p) => p !== "@"),
      contextArguments: args.sort() });
  } else if (node.kind === "Flatten") {
    fetches(node.node, node.path, out);
  } else if (node.kind === "Sequence" || node.kind === "Parallel") {
    for (const n of node.nodes) fetches(n, path, out);
  } else if (node.kind === "Condition") {
    // @include/@skip on a whole fetch: its fetches are counted (ours fetch and let the
    // subgraph apply the condition).
    fetches(node.ifClause, path, out);
    fetches(node.elseClause, path, out);
  } else if (node.kind === "QueryPlan") {
    fetches(node.node, [], out);
  } else {
    throw new Error(`unexpected plan node ${node.kind}`);
  }
  return out;
}

const out = {};
for (const [name, { sdl, ops }] of Object.entries(JSON.parse(input))) {
  let gateway = null;
  try {
    await new ApolloGateway({ supergraphSdl: sdl, logger: { debug() {}, info() {}, warn() {},
      error() {} } }).load();
  } catch (e) {
    gateway = String(e.message || e);
  }
  const sg = Supergraph.build(sdl, { supportedFeatures: ROUTER_SUPPORTED_SUPERGRAPH_FEATURES });
  const qp = new QueryPlanner(sg);
  const plans = {};
  for (const [op, query] of Object.entries(ops)) {
    plans[op] = fetches(qp.buildQueryPlan(operationFromDocument(sg.schema, parse(query))), [], []);
  }
  out[name] = { gateway, plans };
}
process.stdout.write(JSON.stringify(out));

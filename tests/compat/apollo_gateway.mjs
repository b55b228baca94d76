// Serves @apollo/gateway over running subgraphs, for the compatibility test and the benchmark.
// env: SUBGRAPHS (JSON {name: url}), PORT, SUPERGRAPH_OUT (write Apollo's composed supergraph),
// SUPERGRAPH_IN (serve this supergraph file instead of composing).
import { readFileSync, writeFileSync } from "node:fs";
import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";
import { ApolloGateway, RemoteGraphQLDataSource } from "@apollo/gateway";
import { composeServices } from "@apollo/composition";
import { parse } from "graphql";

const subgraphs = JSON.parse(process.env.SUBGRAPHS || "{}");
const port = Number(process.env.PORT);

async function composed() {
  if (process.env.SUPERGRAPH_IN) return readFileSync(process.env.SUPERGRAPH_IN, "utf8");
  const services = [];
  for (const [name, url] of Object.entries(subgraphs)) {
    const r = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ query: "{ _service { sdl } }" }),
    });
    services.push({ name, url, typeDefs: parse((await r.json()).data._service.sdl) });
  }
  const result = composeServices(services);
  if (result.errors) {
    console.error(result.errors.map((e) => e.message).join("\n"));
    process.exit(2);
  }
  if (process.env.SUPERGRAPH_OUT) writeFileSync(process.env.SUPERGRAPH_OUT, result.supergraphSdl);
  return result.supergraphSdl;
}

const gateway = new ApolloGateway({
  supergraphSdl: await composed(),
  buildService({ url }) {
    return new RemoteGraphQLDataSource({
      url,
      willSendRequest({ request, context }) {
        for (const h of ["authorization", "traceparent", "tracestate"]) {
          if (context[h]) request.http.headers.set(h, context[h]);
        }
      },
    });
  },
});
const server = new ApolloServer({ gateway, introspection: true,
  includeStacktraceInErrorResponses: false });
const { url } = await startStandaloneServer(server, {
  listen: { port, host: "127.0.0.1" },
  context: async ({ req }) => ({
    authorization: req.headers.authorization,
    traceparent: req.headers.traceparent,
    tracestate: req.headers.tracestate,
  }),
});
console.log(`READY ${url}`);

// Composes subgraph SDLs with @apollo/composition: stdin JSON {name: {url, sdl}} -> stdout
// JSON {supergraphSdl} or {errors: [message]}. Used by the small-supergraph compat suite.
import { composeServices } from "@apollo/composition";
import { parse } from "graphql";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = {};
for (const [key, subgraphs] of Object.entries(JSON.parse(input))) {
  const services = Object.entries(subgraphs).map(([name, s]) => ({
    name, url: s.url, typeDefs: parse(s.sdl),
  }));
  const result = composeServices(services);
  out[key] = result.errors
    ? { errors: result.errors.map((e) => e.message) }
    : { supergraphSdl: result.supergraphSdl };
}
process.stdout.write(JSON.stringify(out));

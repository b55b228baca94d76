// Serves one @apollo/gateway per small supergraph, all in this process.
// stdin: JSON {case: supergraphSdl}; prints one line `READY {case: url}` when all listen.
import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";
import { ApolloGateway } from "@apollo/gateway";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const started = await Promise.all(Object.entries(JSON.parse(input)).map(
  async ([name, supergraphSdl]) => {
    const server = new ApolloServer({ gateway: new ApolloGateway({ supergraphSdl }),
      includeStacktraceInErrorResponses: false });
    const { url } = await startStandaloneServer(server,
      { listen: { port: 0, host: "127.0.0.1" } });
    return [name, url];
  }));
console.log(`READY ${JSON.stringify(Object.fromEntries(started))}`);

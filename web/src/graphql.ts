// Typed documents: gql.tada reads the types generated from the repository's schema.graphql
// (`npm run types` writes graphql-env.d.ts), so every query here is checked by `tsc`.
import { initGraphQLTada } from "gql.tada";
import type { introspection } from "./graphql-env.d.ts";

export const graphql = initGraphQLTada<{
  introspection: introspection;
  scalars: { DateTime: string; Date: string; ID: string };
}>();

export type { FragmentOf, ResultOf, VariablesOf } from "gql.tada";
export { readFragment } from "gql.tada";

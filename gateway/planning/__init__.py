"""Query planning on the query graph.

- `fields`: the one field collector (fragments flattened, @include/@skip kept per field);
- `paths`: the search over the query graph (condition solving and routes, memoised);
- `builder`: the fetch-dependency graph of one operation (subgraph selections, representations,
  dependencies);
- `plan`: typed plan nodes (Sequence, Parallel, Fetch, Flatten, Condition) and their printer.
"""

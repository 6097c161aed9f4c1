/**
 * One subgraph request for the entity fetches of one client request that are the same operation
 * and start together. Apollo's planner often repeats a fetch at several paths of one plan, in
 * parallel branches: on the federation benchmark's query, `{ ... on Product { name price weight } }`
 * from `products` at two paths, `inStock` and `shippingEstimate` from `inventory` at two paths
 * each. Apollo Gateway sends each as a request of its own; here the representations of such fetches
 * are sent together and the answer is split back, so that each fetch sees the answer it would
 * have had alone: its own slice of `_entities`, the errors about its entities (re-indexed), and
 * the errors about none of them (a whole-request error) as every one of them would have had them.
 *
 * Fetches join a batch while the request's plan is being walked synchronously, which is how
 * Apollo's executor starts parallel branches; the batch is sent on the next turn of the event
 * loop (setImmediate), after the microtasks that start the next fetches of sequences whose last
 * fetch has just been answered.
 */
import type { GraphQLDataSource } from '@apollo/gateway';
import type { SubgraphResponse } from '../datasource.ts';

type ProcessOptions = Parameters<GraphQLDataSource['process']>[0];
type SubgraphError = NonNullable<SubgraphResponse['errors']>[number];

interface Member {
  readonly representations: readonly unknown[];
  readonly resolve: (response: SubgraphResponse) => void;
  readonly reject: (error: unknown) => void;
}

interface Batch {
  readonly service: GraphQLDataSource;
  /** The first member's request: every member's differs only in its representations. */
  readonly options: ProcessOptions;
  readonly members: Member[];
}

/** The entity fetches of one client request, batched by subgraph, operation and other variables. */
export class EntityBatcher {
  private readonly open = new Map<string, Batch>();
  private scheduled = false;

  /**
   * Sends `options` (an `_entities` request whose `representations` variable is
   * `representations`) with the other requests of the same batch, those with the same `operation`
   * (the service and the operation's text without its name: the planner names each fetch apart)
   * and the same other variables; resolves with the answer this request alone would have had.
   */
  process(service: GraphQLDataSource, operation: string, options: ProcessOptions, representations: readonly unknown[], otherVariables: Record<string, unknown>): Promise<SubgraphResponse> {
    let others = '';
    for (const _ in otherVariables) {
      others = JSON.stringify(otherVariables);
      break;
    }
    const key = `${operation}\n${others}`;
    let batch = this.open.get(key);
    if (!batch) {
      batch = { service, options, members: [] };
      this.open.set(key, batch);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    }
    const members = batch.members;
    return new Promise((resolve, reject) => members.push({ representations, resolve, reject }));
  }

  private flush(): void {
    this.scheduled = false;
    const batches = [...this.open.values()];
    this.open.clear();
    for (const batch of batches) void send(batch);
  }
}

async function send(batch: Batch): Promise<void> {
  const { members, options } = batch;
  if (members.length === 1) {
    await batch.service.process(options).then(members[0]!.resolve, members[0]!.reject);
    return;
  }
  const representations = members.flatMap((member) => member.representations);
  let response: SubgraphResponse;
  try {
    response = await batch.service.process({ ...options, request: { ...options.request, variables: { ...options.request.variables, representations } } });
  } catch (error) {
    for (const member of members) member.reject(error);
    return;
  }
  const parts = split(response, members);
  for (let i = 0; i < members.length; i++) members[i]!.resolve(parts[i]!);
}

/** Each member's answer from the batch's. */
export function split(response: SubgraphResponse, members: readonly { readonly representations: readonly unknown[] }[]): SubgraphResponse[] {
  const data = response.data as Record<string, unknown> | null | undefined;
  const entities = data?._entities;
  const total = members.reduce((sum, member) => sum + member.representations.length, 0);
  // Not the answer asked for (no data, or the wrong number of entities): each member reports it as it would its own.
  if (Array.isArray(entities) && entities.length !== total) return members.map(() => response);
  const starts: number[] = [];
  let start = 0;
  for (const member of members) {
    starts.push(start);
    start += member.representations.length;
  }
  const errors: SubgraphError[][] = members.map(() => []);
  for (const error of response.errors ?? []) {
    const path = error.path;
    const index = path?.[0] === '_entities' ? path[1] : undefined;
    if (typeof index !== 'number' || index < 0 || index >= total) {
      for (const list of errors) list.push(error);
      continue;
    }
    let k = members.length - 1;
    while (starts[k]! > index) k--;
    errors[k]!.push({ ...error, path: ['_entities', index - starts[k]!, ...path!.slice(2)] });
  }
  return members.map((member, k) => {
    const part: SubgraphResponse = { ...response };
    if (Array.isArray(entities)) part.data = { ...data, _entities: entities.slice(starts[k], starts[k]! + member.representations.length) };
    if (errors[k]!.length > 0) part.errors = errors[k]!;
    else delete part.errors;
    return part;
  });
}

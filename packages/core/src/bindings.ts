/**
 * The Tributary events spec: how a subgraph declares, in its own SDL, which events feed its
 * subscriptions and which events change its types. Subgraphs `@link` the spec and compose the two
 * directives into the supergraph (`@composeDirective`); the gateway reads them from the
 * supergraph it loads and builds its subscriptions, queue bindings and cache invalidation from
 * them, so it needs no code of any subgraph's domain. `pnpm schema:check` validates every binding
 * against the API schema and the event contracts.
 *
 * Paths into an event's data are dotted (`job.id`); conditions are `<path> in [A, B]` or
 * `<path> = A`, compared as strings.
 */
export {
  BindingError,
  BindingProblemCode,
  conditionHolds,
  EVENTS_SPEC_URL,
  eventDirectiveDefinitions,
  eventsSpecLink,
  eventTypeOf,
  keyValue,
  parseCondition,
  parsePath,
  valueAt,
  type BindingProblem,
  type Bindings,
  type ChangeBinding,
  type Condition,
  type Path,
  type SendMode,
  type SubscriptionBinding,
} from './bindings/model.ts';
export { readBindings } from './bindings/read.ts';
export { HIDDEN_PREFIX, KEY_VARIABLE, lookupQuery, takeHidden } from './bindings/query.ts';
export { checkBindings } from './bindings/check.ts';

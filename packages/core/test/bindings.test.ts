import { buildASTSchema, parse, print, validate, type FieldNode, type OperationDefinitionNode } from 'graphql';
import { describe, expect, it } from 'vitest';
import { conditionHolds, eventDirectiveDefinitions, lookupQuery, parseCondition, readBindings, takeHidden } from '../src/bindings.ts';

const SDL = `
  ${eventDirectiveDefinitions}
  type Query { order(id: ID!): Order  totals: Totals! }
  type Subscription {
    orderShipped(orderId: ID!, note: String): Order!
      @eventSubscription(events: ["order.changed/v1"], match: ["order.id = $orderId"], where: "status in [SHIPPED, LOST]", entity: "Order", key: "order.id", lookup: "order(id: $key)", send: "COMPLETION", completeWhen: "status in [SHIPPED, LOST]")
    totalsChanged: Totals! @eventSubscription(events: ["totals.changed/v1"], entity: "Totals", lookup: "totals", initial: true)
  }
  type Order @changedBy(event: "order.changed/v1", key: "order.id") { id: ID! status: String! lines: [Line!]! }
  type Line { sku: String! }
  type Totals @changedBy(event: "totals.changed/v1") { orders: Int! }
`;
const schema = buildASTSchema(parse(SDL));

describe('event bindings', () => {
  it('reads both directives, the key bound to its argument', () => {
    const { bindings, problems } = readBindings(SDL);
    expect(problems).toEqual([]);
    expect(bindings.changes).toEqual([
      { type: 'Order', event: 'order.changed/v1', key: ['order', 'id'] },
      { type: 'Totals', event: 'totals.changed/v1', key: undefined },
    ]);
    const [shipped, totals] = bindings.subscriptions;
    expect(shipped).toMatchObject({ field: 'orderShipped', keyArgument: 'orderId', send: 'COMPLETION', match: [{ path: ['order', 'id'], argument: 'orderId' }] });
    expect(totals).toMatchObject({ field: 'totalsChanged', key: undefined, keyArgument: undefined, initial: true, send: 'EVERY' });
  });

  it('reports each malformed argument', () => {
    const bad = SDL.replace('match: ["order.id = $orderId"]', 'match: ["order.id == orderId"]').replace('send: "COMPLETION"', 'send: "SOMETIMES"').replace('lookup: "totals"', 'lookup: "totals { orders }"');
    const messages = readBindings(bad).problems.map((p) => `${p.code} ${p.field}`);
    expect(messages).toEqual(['INVALID_BINDING Subscription.orderShipped', 'INVALID_BINDING Subscription.orderShipped', 'INVALID_BINDING Subscription.totalsChanged']);
  });

  it('resolves the client’s selection through the lookup, with the completion field hidden and unused variables dropped', () => {
    const binding = readBindings(SDL).bindings.subscriptions[0]!;
    const document = parse('subscription Watch($id: ID!, $n: String) { shipped: orderShipped(orderId: $id, note: $n) { id ...L } } fragment L on Order { lines { sku } }');
    const operation = document.definitions[0] as OperationDefinitionNode;
    const field = operation.selectionSet.selections[0] as FieldNode;
    const query = lookupQuery(binding, schema, { operation, field, fragments: [document.definitions[1]!] });
    expect(print(query)).toBe(print(parse('query Watch($_tributaryKey: ID!) { shipped: order(id: $_tributaryKey) { id ...L _tributary_status: status } } fragment L on Order { lines { sku } }')));
    expect(validate(schema, query)).toEqual([]);
    const value: Record<string, unknown> = { id: '1', lines: [], _tributary_status: 'SHIPPED' };
    const hidden = takeHidden(value);
    expect(value).toEqual({ id: '1', lines: [] });
    expect(conditionHolds(binding.completeWhen!, hidden)).toBe(true);
  });

  it('compares conditions as strings, at dotted paths', () => {
    const condition = parseCondition('order.paid = true')!;
    expect(conditionHolds(condition, { order: { paid: true } })).toBe(true);
    expect(conditionHolds(condition, { order: { paid: false } })).toBe(false);
    expect(conditionHolds(parseCondition('n in [1, 2]')!, { n: 2 })).toBe(true);
    expect(parseCondition('no operator')).toBeUndefined();
  });
});

import { connect } from 'amqplib';
const conn = await connect('amqp://guest:guest@127.0.0.1:5672', { noDelay: true });
for (const type of ['classic', 'quorum']) {
  const ch = await conn.createConfirmChannel();
  const cch = await conn.createChannel();
  const q = `lat_${type}_${Date.now()}`;
  await ch.assertQueue(q, { durable: true, arguments: { 'x-queue-type': type } });
  let resolve;
  await cch.consume(q, (m) => { if (!m) return; cch.ack(m); resolve(); });
  const lat = [], conf = [];
  for (let i = 0; i < 200; i++) {
    const t0 = performance.now();
    const got = new Promise((r) => (resolve = r));
    const confirmed = new Promise((r, j) => ch.sendToQueue(q, Buffer.from('x'.repeat(500)), { persistent: true }, (e) => (e ? j(e) : r())));
    await got; const t1 = performance.now();
    await confirmed; const t2 = performance.now();
    lat.push(t1 - t0); conf.push(t2 - t0);
    await new Promise((r) => setTimeout(r, 5));
  }
  const med = (a) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
  console.log(type, 'deliver p50', med(lat).toFixed(2), 'ms  confirm p50', med(conf).toFixed(2), 'p90', lat[Math.floor(lat.length*0.9)].toFixed(2));
  await cch.close(); await ch.deleteQueue(q);
}
await conn.close();

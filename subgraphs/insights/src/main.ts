import { runServiceMain } from '@tributary/core/service';
import { insightsService } from './service.ts';

await runServiceMain(insightsService);

import { runServiceMain } from '@tributary/core/service';
import { webhooksService } from './service.ts';

await runServiceMain(webhooksService);

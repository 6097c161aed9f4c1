import { runServiceMain } from '@tributary/core/service';
import { documentsService } from './service.ts';

await runServiceMain(documentsService);

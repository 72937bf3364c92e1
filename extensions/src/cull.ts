/**
 * The idle-culling warning: "stopping in N min" some minutes before the culler stops
 * this server, with a one-click Extend, and unsaved documents saved before the stop.
 * The plan (when the server stops, whether to warn) comes from the server extension
 * (GET api/atelier/culling), which has it from the culler; Extend posts
 * api/atelier/culling/extend. Saves made here are announced first
 * (api/atelier/culling/saving) so that they do not count as work that keeps the server.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

interface IPlan {
  cull_at: string | null;
  warn: boolean;
  now: string;
  reason?: string;
}

const POLL_MS = 10000;

async function call(path: string, method = 'GET'): Promise<IPlan> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'api', 'atelier', 'culling', ...(path ? [path] : []));
  const response = await ServerConnection.makeRequest(url, { method }, settings);
  if (!response.ok) {
    throw new Error(`api/atelier/culling/${path} answered ${response.status}`);
  }
  return (await response.json()) as IPlan;
}

/** "stopping in 3 min" (whole minutes, rounded up; under a minute it says so). */
export function stoppingIn(seconds: number): string {
  return seconds < 60 ? 'stopping in under 1 min' : `stopping in ${Math.ceil(seconds / 60)} min`;
}

/** Save every open document that has unsaved changes; returns how many. */
async function saveDirty(app: JupyterFrontEnd): Promise<number> {
  let saved = 0;
  for (const widget of Array.from(app.shell.widgets('main'))) {
    const context = (widget as any).context;
    if (context && context.model && context.model.dirty && !context.model.readOnly) {
      await context.save();
      saved += 1;
    }
  }
  return saved;
}

class Warning {
  readonly node: HTMLElement;
  private text: HTMLElement;

  constructor(onExtend: () => void) {
    this.node = document.createElement('div');
    this.node.id = 'atelier-cull-warning';
    this.node.className = 'atelier-CullWarning';
    this.node.setAttribute('role', 'alert');
    this.text = document.createElement('span');
    const button = document.createElement('button');
    button.className = 'jp-Button atelier-CullWarning-extend';
    button.textContent = 'Extend';
    button.onclick = onExtend;
    this.node.append(this.text, button);
    this.node.hidden = true;
    document.body.appendChild(this.node);
  }

  show(seconds: number): void {
    this.text.textContent = `This server is idle and ${stoppingIn(seconds)}. Unsaved documents are saved first.`;
    this.node.hidden = false;
  }

  hide(): void {
    this.node.hidden = true;
  }
}

export const cullPlugin: JupyterFrontEndPlugin<void> = {
  id: 'atelier-lab:cull',
  description: 'Warns before the idle culler stops this server, with Extend; saves unsaved work first.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    let savedFor: string | null = null;
    const warning = new Warning(() => {
      void call('extend', 'POST').then(plan => update(plan));
    });

    const update = async (plan: IPlan): Promise<void> => {
      if (!plan.cull_at || !plan.warn) {
        warning.hide();
        return;
      }
      const left = (Date.parse(plan.cull_at) - Date.parse(plan.now)) / 1000;
      warning.show(Math.max(0, left));
      // Close to the stop (two polls ahead), once per planned stop: save unsaved work.
      if (left <= (2 * POLL_MS) / 1000 + 5 && savedFor !== plan.cull_at) {
        savedFor = plan.cull_at;
        await call('saving', 'POST');
        const n = await saveDirty(app);
        console.info(`atelier-lab: saved ${n} document(s) before the server stops`);
      }
    };

    const poll = async (): Promise<void> => {
      try {
        await update(await call(''));
      } catch (reason) {
        console.debug('atelier-lab: no culling plan', reason);
      }
    };
    void poll();
    window.setInterval(() => void poll(), POLL_MS);
  }
};

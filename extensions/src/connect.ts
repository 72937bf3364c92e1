/**
 * The Connect panel: how to reach this session from outside the browser (VS Code
 * Remote-SSH, ssh, Kubernetes attach) and in it (VS Code in the browser), with this
 * session's alias, server name and hub URL filled in, and its profile, CPU, memory
 * and GPU. Every fact comes from the server extension (GET atelier/connect), which
 * reads the session contract; nothing here guesses.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

interface ICommand {
  id: string;
  title: string;
  command: string;
}

interface IFacts {
  user: string;
  server: string;
  hub_url: string;
  alias: string;
  home: string;
  mode: string;
  profile: string;
  profile_display_name: string;
  cpu: string;
  memory: string;
  gpu: string;
  vscode_url: string;
  ray_dashboard_url: string;
  commands: ICommand[];
}

const connectIcon = new LabIcon({
  name: 'atelier-lab:connect',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16">' +
    '<path class="jp-icon3" fill="#616161" d="M4 5h16v10H4zm-2 12h20v2H2zM6 7v6h12V7z' +
    'M7 9l3 2-3 2zm4 3h4v1h-4z"/></svg>'
});

/** Ask the server extension for this session's facts. */
export async function fetchFacts(): Promise<IFacts> {
  const settings = ServerConnection.makeSettings();
  const url =
    URLExt.join(settings.baseUrl, 'atelier', 'connect') +
    URLExt.objectToQueryString({ origin: window.location.origin });
  const response = await ServerConnection.makeRequest(url, {}, settings);
  if (!response.ok) {
    throw new Error(`atelier/connect answered ${response.status}`);
  }
  return (await response.json()) as IFacts;
}

function el(tag: string, cls: string, text?: string): HTMLElement {
  const node = document.createElement(tag);
  node.className = cls;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** The panel's DOM for one set of facts (text only: no fact is parsed as HTML). */
export function renderFacts(node: HTMLElement, facts: IFacts): void {
  node.replaceChildren();
  node.appendChild(el('h2', 'atelier-Connect-title', 'Connect to this session'));

  const table = el('table', 'atelier-Connect-facts');
  const rows: [string, string][] = [
    ['User', facts.user],
    ['Server', facts.server || '(default)'],
    ['Profile', facts.profile_display_name ? `${facts.profile} (${facts.profile_display_name})` : facts.profile],
    ['CPU', facts.cpu],
    ['Memory', facts.memory],
    ['GPU', facts.gpu],
    ['Hub', facts.hub_url],
    ['Mode', facts.mode]
  ];
  for (const [key, value] of rows) {
    const tr = el('tr', '');
    tr.dataset.fact = key.toLowerCase();
    tr.appendChild(el('th', '', key));
    tr.appendChild(el('td', '', value));
    table.appendChild(tr);
  }
  node.appendChild(table);

  // A section with one link, opened in a new tab.
  const linkSection = (title: string, cls: string, text: string, href: string) => {
    node.appendChild(el('h3', 'atelier-Connect-section', title));
    const a = el('a', cls, text) as HTMLAnchorElement;
    a.href = href;
    a.target = '_blank';
    a.rel = 'noopener';
    node.appendChild(a);
  };
  if (facts.vscode_url) {
    linkSection('VS Code in the browser', 'atelier-Connect-vscode', 'Open VS Code (code-server)', facts.vscode_url);
  }
  if (facts.ray_dashboard_url) {
    // This server proxies its personal Ray cluster's dashboard (for its owner alone).
    linkSection('Ray', 'atelier-Connect-ray', "Your Ray cluster's dashboard", facts.ray_dashboard_url);
  }

  node.appendChild(el('h3', 'atelier-Connect-section', 'From your machine'));
  for (const c of facts.commands) {
    const block = el('div', 'atelier-Connect-block');
    block.appendChild(el('div', 'atelier-Connect-caption', c.title));
    const pre = el('pre', 'atelier-Connect-command', c.command);
    pre.dataset.command = c.id;
    block.appendChild(pre);
    const copy = el('button', 'jp-Button atelier-Connect-copy', 'Copy') as HTMLButtonElement;
    copy.onclick = () => {
      void navigator.clipboard?.writeText(c.command);
    };
    block.appendChild(copy);
    node.appendChild(block);
  }
}

export class ConnectPanel extends Widget {
  constructor() {
    super();
    this.id = 'atelier-connect';
    this.addClass('atelier-Connect');
    this.title.icon = connectIcon;
    this.title.caption = 'Connect: VS Code, SSH, this session';
    this.node.textContent = 'Loading…';
  }

  async refresh(): Promise<void> {
    try {
      renderFacts(this.node, await fetchFacts());
    } catch (reason) {
      this.node.replaceChildren(el('p', 'atelier-Connect-error', `Connect panel: ${reason}`));
    }
  }
}

export const connectPlugin: JupyterFrontEndPlugin<void> = {
  id: 'atelier-lab:connect',
  description: "This session's Connect panel (VS Code, SSH, Kubernetes attach).",
  autoStart: true,
  optional: [ILabShell],
  activate: (app: JupyterFrontEnd, labShell: ILabShell | null) => {
    const panel = new ConnectPanel();
    app.shell.add(panel, 'left', { rank: 900 });
    void panel.refresh();
    app.commands.addCommand('atelier:connect', {
      label: 'Connect to this session (VS Code, SSH)',
      execute: () => {
        labShell?.activateById(panel.id);
        return panel.refresh();
      }
    });
  }
};

/**
 * Atelier's JupyterLab extension: one plugin per file, all of them listed here.
 * A new plugin is a new file in src/ and one line below.
 */
import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { connectPlugin } from './connect';
import { cullPlugin } from './cull';

const plugins: JupyterFrontEndPlugin<any>[] = [
  connectPlugin,
  cullPlugin
];

export default plugins;

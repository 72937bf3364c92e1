import './connect.css';
import './cull.css';

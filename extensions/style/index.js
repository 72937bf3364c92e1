import './connect.css';
